"""On an NVIDIA GPU with onnxruntime-gpu: the CUDA provider is chosen and actually runs the graph
(ONNX Runtime's profile names the provider of every node it ran), through IO binding, and answers
as the CPU provider does. Skips cleanly anywhere else."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from functions.batching import Batcher
from functions.model import LoadedModel, session_options
from functions.providers import CUDA
from functions.service import ModelService
from functions.settings import Settings
from tests.gpus import cuda_skip_reason

pytestmark = pytest.mark.gpu

TEXTS = ["paris is the capital of france", "the model", "john lives in berlin and works in london"]


@pytest.fixture(scope="module")
def gpu():
    reason = cuda_skip_reason()
    if reason:
        pytest.skip(reason)


def test_the_cuda_provider_actually_runs_the_graph(gpu, tiny_bundle, tmp_path):
    bundle = tiny_bundle("feature-extraction", quantization="none")
    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "ort-profile")
    model = LoadedModel(bundle, threads=1, max_batch=8, max_tokens=None, truncate=True, options=options,
                        provider="cuda")
    assert model.provider == CUDA and model.output_device == "cuda"
    on_gpu = ModelService(model, Settings.resolve(bundle))
    on_cpu = ModelService.load(bundle)
    body = json.dumps({"inputs": TEXTS}).encode()
    got = np.array(on_gpu.predict(on_gpu.name, "application/json", body).payload)
    want = np.array(on_cpu.predict(on_cpu.name, "application/json", body).payload)
    np.testing.assert_allclose(got, want, atol=1e-3)
    events = json.loads(Path(model.session.end_profiling()).read_text())
    ran_on = {e["args"].get("provider") for e in events if e.get("cat") == "Node"}
    assert CUDA in ran_on, ran_on


def test_batches_on_cuda_answer_as_the_cpu_does(gpu, tiny_bundle):
    bundle = tiny_bundle("text-classification", quantization="none")
    on_gpu, on_cpu = ModelService.load(bundle, provider="cuda"), ModelService.load(bundle)
    assert on_gpu.model.provider == CUDA
    bodies = [json.dumps({"inputs": t, "parameters": {"top_k": None}}).encode() for t in TEXTS * 4]

    async def batched():
        batcher = Batcher(on_gpu.model)
        pending = [on_gpu.begin_predict(on_gpu.name, None, b) for b in bodies]
        results = await asyncio.gather(*(batcher.submit(p.prepared) for p in pending))
        await batcher.stop()
        return [p.finish(outputs, feeds).payload for p, (feeds, outputs) in zip(pending, results)], batcher.stats

    answers, stats = asyncio.run(batched())
    assert stats.batches < len(bodies)
    for got, body in zip(answers, bodies):
        want = on_cpu.predict(on_cpu.name, None, body).payload
        assert [g["label"] for g in got] == [w["label"] for w in want]
        np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-3)
