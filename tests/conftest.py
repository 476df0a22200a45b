"""Shared fixtures: tiny random-weight models per task, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tinymodels import build_tiny_clip_model, build_tiny_image_model, build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: task -> a Hugging Face model directory with a tiny random BERT for that task."""
    cache: dict[tuple, Path] = {}

    def make(task: str, **kwargs) -> Path:
        key = (task, tuple(sorted(kwargs.items())))
        if key not in cache:
            root = tmp_path_factory.mktemp("hf-" + task)
            cache[key] = build_tiny_model(root / "model", task, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_model_dir):
    """Factory: task -> an exported model bundle (export.exporter.export_bundle) of the tiny model."""
    cache: dict[tuple, Path] = {}

    def make(task: str, **kwargs) -> Path:
        from export.exporter import export_bundle

        key = (task, tuple(sorted(kwargs.items())))
        if key not in cache:
            source = tiny_model_dir(task, **{k: v for k, v in kwargs.items() if k in ("multi_label",)})
            out = tmp_path_factory.mktemp("bundle-" + task) / "bundle"
            export_bundle(source, task, out, name="tiny-" + task.split("-")[0],
                          **{k: v for k, v in kwargs.items() if k not in ("multi_label",)})
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_image_model_dir(tmp_path_factory):
    """Factory: "vit" or "convnext" -> a Hugging Face directory with a tiny random image classifier;
    "clip" -> a tiny random CLIP (zero-shot image classification)."""
    cache: dict[str, Path] = {}

    def make(architecture: str) -> Path:
        if architecture not in cache:
            folder = tmp_path_factory.mktemp("hf-" + architecture) / "model"
            cache[architecture] = (build_tiny_clip_model(folder) if architecture == "clip"
                                   else build_tiny_image_model(folder, architecture))
        return cache[architecture]

    return make


@pytest.fixture(scope="session")
def tiny_image_bundle(tmp_path_factory, tiny_image_model_dir):
    """Factory: architecture (+ export options; ``task`` for CLIP's other task) -> an exported image bundle."""
    cache: dict[tuple, Path] = {}

    def make(architecture: str, **kwargs) -> Path:
        from export.exporter import export_bundle

        key = (architecture, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("bundle-" + architecture) / "bundle"
            default = "zero-shot-image-classification" if architecture == "clip" else "image-classification"
            task = kwargs.pop("task", default)
            export_bundle(tiny_image_model_dir(architecture), task, out, name="tiny-" + architecture, **kwargs)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """A tiny random Whisper saved as a Hugging Face directory (tests/tinymodels.py)."""
    from tests.tinymodels import build_tiny_whisper_model

    return build_tiny_whisper_model(tmp_path_factory.mktemp("hf-whisper") / "model")


@pytest.fixture(scope="session")
def tiny_speech_bundle(tmp_path_factory, tiny_whisper_dir):
    """Factory: export options -> an exported automatic-speech-recognition bundle of the tiny Whisper."""
    cache: dict[tuple, Path] = {}

    def make(**kwargs) -> Path:
        from export.exporter import export_bundle

        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("bundle-whisper") / "bundle"
            export_bundle(tiny_whisper_dir, "automatic-speech-recognition", out, name="tiny-whisper", **kwargs)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def minilm_spec():
    """The default models.yaml's MiniLM declaration."""
    from infra.spec import load_models_file

    return load_models_file(ROOT / "models.yaml").get("minilm")


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory, minilm_spec) -> Path:
    """The real all-MiniLM-L6-v2 exported once per session with the default models.yaml settings.

    The quantization search is off: it is exercised by the tiny-model tests and
    bench/quant_search_minilm.py, and would add minutes to every CI run."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from export.exporter import export_bundle

    spec = minilm_spec
    bundle = tmp_path_factory.mktemp("minilm") / "bundle"
    export_bundle(spec.source_dir(), spec.task, bundle, name=spec.name, target=spec.target,
                  architecture=spec.architecture, quantization=spec.quantization, thresholds=spec.parity,
                  max_tokens=spec.max_tokens, search_budget_s=0)
    return bundle


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MODELFN_REQUIRE_CONTAINERS=1 (CI), a container test that skips is a failure: CI must
    prove sam build / local invoke / start-api, not quietly pass without them."""
    outcome = yield
    report = outcome.get_result()
    import os

    if (report.skipped and item.get_closest_marker("containers") is not None
            and os.environ.get("MODELFN_REQUIRE_CONTAINERS") == "1"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"container test skipped but MODELFN_REQUIRE_CONTAINERS=1: {reason}"


@pytest.fixture(scope="session")
def gen_hf_dir(tmp_path_factory):
    """Factory: family ("llama" | "qwen2") -> a tiny random causal LM saved as a Hugging Face directory."""
    from tests.genbundles import build_tiny_lm

    cache: dict = {}

    def make(family: str):
        if family not in cache:
            cache[family] = build_tiny_lm(tmp_path_factory.mktemp("hf-lm-" + family) / "model", family)
        return cache[family]

    return make


@pytest.fixture(scope="session")
def gen_bundle(tmp_path_factory, gen_hf_dir):
    """Factory: family -> a text-generation bundle (onnxruntime-genai builder, fp32) of the tiny LM.

    With MODELFN_TEST_GEN_BUNDLES set, ``$MODELFN_TEST_GEN_BUNDLES/<family>/bundle`` is used where it
    exists: the same bundle built elsewhere with our pinned builder, for a machine whose
    onnxruntime-genai builder cannot run (the GPU kit's, scripts/gpu-kit/prepare.sh)."""
    import os

    from tests.genbundles import build_generation_bundle

    cache: dict = {}
    prebuilt = os.environ.get("MODELFN_TEST_GEN_BUNDLES")

    def make(family: str):
        if family not in cache:
            ready = Path(prebuilt) / family / "bundle" if prebuilt else None
            if ready is not None and (ready / "manifest.json").is_file():
                cache[family] = ready
            else:
                out = tmp_path_factory.mktemp("bundle-lm-" + family) / "bundle"
                cache[family] = build_generation_bundle(gen_hf_dir(family), out, name="tiny-" + family,
                                                        family=family)
        return cache[family]

    return make
