"""models.yaml's gpu fields: defaults, and one-line errors for what a gpu endpoint cannot do."""

from __future__ import annotations

import pytest

from functions.errors import ConfigError
from infra.spec import DEFAULT_INSTANCE_TYPE, parse_model


def gpu(**fields):
    return parse_model({"name": "big", "source": "x", "task": "feature-extraction", "target": "gpu", **fields})


def test_gpu_defaults_are_one_l4_instance_scaling_to_two():
    spec = gpu()
    assert DEFAULT_INSTANCE_TYPE == "ml.g6.xlarge"
    assert (spec.instance_type, spec.min_instances, spec.max_instances) == ("ml.g6.xlarge", 1, 2)
    assert (spec.quantization, spec.architecture, spec.scale_to_zero) == ("fp16", "x86_64", False)
    assert spec.target_invocations > 0


def test_scale_to_zero_opt_in_starts_at_zero():
    spec = gpu(scale_to_zero=True, max_instances=4, instance_type="ml.g6e.2xlarge", target_invocations=30)
    assert (spec.min_instances, spec.max_instances, spec.instance_type, spec.target_invocations) == \
        (0, 4, "ml.g6e.2xlarge", 30)


@pytest.mark.parametrize("fields, message", [
    ({"architecture": "arm64"}, "field 'architecture': the gpu target runs on x86_64 only"),
    ({"quantization": "int8"}, "field 'quantization': int8 is not for the gpu target"),
    ({"instance_type": "g6.xlarge"}, "field 'instance_type': must be a SageMaker instance type"),
    ({"min_instances": 0}, "field 'min_instances': 0 needs scale_to_zero: true"),
    ({"min_instances": 3, "max_instances": 2}, "field 'max_instances': must be at least min_instances (3)"),
    ({"max_instances": 0}, "field 'max_instances': must be an integer from 1 to 100"),
    ({"scale_to_zero": "yes"}, "field 'scale_to_zero': must be true or false"),
    ({"target_invocations": 0}, "field 'target_invocations': must be an integer from 1"),
    ({"task": "asr"}, "field 'target': gpu is not served for automatic-speech-recognition yet (its bundles have "
                      "no fp16 export"),
])
def test_bad_gpu_fields_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError) as err:
        gpu(**fields)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_gpu_fields_on_a_lambda_model_are_refused():
    with pytest.raises(ConfigError, match="field 'max_instances': is for the gpu target only"):
        parse_model({"name": "small", "source": "x", "task": "feature-extraction", "max_instances": 3})


@pytest.mark.parametrize("task", ["image-classification", "zero-shot-image-classification", "image-feature-extraction",
                                  "text-generation", "question-answering"])
def test_every_other_task_may_target_gpu(task):
    assert gpu(task=task).target == "gpu"
