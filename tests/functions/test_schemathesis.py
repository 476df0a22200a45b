"""Schemathesis against the app's own /openapi.json, in process (ASGI): for every operation, requests
generated from the schema (positive: what it promises to accept; negative: what it must refuse) with
Schemathesis' conformance checks on (no 5xx, status codes, content types and response bodies as
documented). Complements test_fuzz.py's hypothesis fuzzing through both adapters."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from functions.app import create_app

EXAMPLES = 40  # per operation and mode
TASKS = ["feature-extraction", "text-classification", "token-classification", "question-answering"]


@pytest.mark.parametrize("task", TASKS)
def test_the_app_conforms_to_its_own_schema(tiny_bundle, task, capsys):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(tiny_bundle(task), name="tiny"))
    failures, cases, operations = [], [0], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                cases[0] += 1
                case.call_and_validate()

            try:
                check()
            except Unsatisfiable:
                # Nothing to make invalid (a GET without parameters): negative mode has no case to send.
                assert mode is GenerationMode.NEGATIVE and not operation.body, operation.label
            except Exception as exc:  # noqa: BLE001 - collected, so every operation is checked
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:500]}")
    with capsys.disabled():
        print(f"\nschemathesis {task}: {operations} operations, {cases[0]} requests, {len(failures)} failures")
    assert operations >= 8 and cases[0] > operations * EXAMPLES
    assert not failures, "\n".join(failures)
