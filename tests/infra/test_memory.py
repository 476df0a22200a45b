"""`modelfn build` sizes each function's memory from its bundle and refuses what cannot fit
(infra/build/memory.py, infra/build/budget.py), with one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from functions.errors import ConfigError
from functions.manifest import GENAI_CONFIG_FILE, MODEL_FILE, read_manifest
from infra.build import BuildSettings, build, pinned_requirements
from infra.build.context import trim_for
from infra.build.budget import (
    FORBIDDEN,
    image_contents,
    installed_bytes,
    refuse_forbidden,
)
from infra.build.memory import (
    AUTO_MIN_MB,
    FLOAT_BYTES,
    HEADROOM,
    HIDDEN_BUFFERS,
    LAMBDA_MAX_MB,
    STEP_MB,
    encoder_shape,
    estimate_bundle,
)
from infra.cli import main as modelfn
from infra.registry import open_registry
from infra.registry.errors import IntegrityError
from infra.spec import parse_model

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".wheelhouse"


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory, tiny_bundle, gen_bundle):  # noqa: F811
    """A local registry holding the tiny encoder (tiny) and the tiny llama (lm), both with alias prod."""
    root = tmp_path_factory.mktemp("registry")
    registry = open_registry(str(root))
    registry.promote("tiny", "prod", registry.push("tiny", tiny_bundle("feature-extraction")).version)
    registry.promote("lm", "prod", registry.push("lm", gen_bundle("llama")).version)
    return root


def write_models(path: Path, **fields) -> Path:
    model = {"name": "tiny", "source": "unused-at-build", "task": "feature-extraction"}
    model.update(fields)
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def lm_models(path: Path, **fields) -> Path:
    return write_models(path, name="lm", task="text-generation", **fields)


def run_build(tmp_path: Path, registry: Path, models: Path, capsys) -> tuple[int, str]:
    out = tmp_path / "out"
    code = modelfn(["build", "--models-file", str(models), "--registry", str(registry), "--out", str(out / "build"),
                    "--template", str(out / "template.yaml"), "--python-version", "3.11", "--wheelhouse", str(WHEELHOUSE)])
    return code, capsys.readouterr().err


def assert_refused(tmp_path: Path, code: int, err: str, *needles: str) -> None:
    assert code != 0 and err.startswith("modelfn: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()


# -- the estimate ----------------------------------------------------------------------------------

def test_encoder_shape_is_read_from_the_graph(tiny_bundle, tiny_model_dir):
    config = json.loads((tiny_model_dir("feature-extraction") / "config.json").read_text())
    for quantization in ("int8", "none"):  # the int8 graph is fused (QAttention), the fp32 one is not
        bundle = tiny_bundle("feature-extraction", quantization=quantization)
        shape = encoder_shape((bundle / MODEL_FILE).read_bytes())
        assert (shape.hidden, shape.heads) == (config["hidden_size"], config["num_attention_heads"])


def test_encoder_estimate_arithmetic(tiny_bundle, tiny_model_dir):
    bundle = tiny_bundle("feature-extraction")
    config = json.loads((tiny_model_dir("feature-extraction") / "config.json").read_text())
    manifest = read_manifest(bundle)
    batch, tokens = 16, 64
    assert tokens <= manifest.runtime.max_length
    est = estimate_bundle(bundle, max_batch=batch, max_tokens=tokens)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    activations = FLOAT_BYTES * batch * tokens * (HIDDEN_BUFFERS * hidden + heads * tokens)
    assert est.working == (("activations", activations / 2**20),)
    assert est.weights_mb == pytest.approx(2 * sum(f.size for f in manifest.files.values()) / 2**20)
    total = (est.runtime_mb + est.weights_mb + est.working_mb) * (1 + HEADROOM)
    assert est.need_mb % STEP_MB == 0 and total <= est.need_mb < total + STEP_MB
    assert est.auto_mb == max(AUTO_MIN_MB, est.need_mb)
    # tokens beyond the model's window cost nothing more: requests are cut to it
    longest = manifest.runtime.max_length
    assert estimate_bundle(bundle, max_batch=batch, max_tokens=8192) == estimate_bundle(
        bundle, max_batch=batch, max_tokens=longest)


def test_generation_estimate_is_kv_cache_and_prefill_at_the_context(gen_bundle, gen_hf_dir):  # noqa: F811
    bundle = gen_bundle("llama")
    config = json.loads((gen_hf_dir("llama") / "config.json").read_text())
    genai = json.loads((bundle / GENAI_CONFIG_FILE).read_text())["model"]
    layers, heads, kv_heads = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    for context in (64, 200):
        est = estimate_bundle(bundle, max_batch=1, max_tokens=16, context_length=context)
        kv = 2 * layers * kv_heads * head_dim * context * FLOAT_BYTES
        prefill = context * genai["vocab_size"] * FLOAT_BYTES + heads * context * context * FLOAT_BYTES
        assert est.working == (("KV", kv / 2**20), ("prefill", prefill / 2**20))
    # context_length 0: the bundle's own window
    own = read_manifest(bundle).runtime.context_length
    assert estimate_bundle(bundle, max_batch=1, max_tokens=16) == estimate_bundle(
        bundle, max_batch=1, max_tokens=16, context_length=own)


# -- models.yaml ----------------------------------------------------------------------------------

def test_memory_mb_is_auto_unless_given():
    base = {"name": "m", "source": "x", "task": "feature-extraction"}
    assert parse_model(base).memory_mb is None and parse_model({**base, "memory_mb": "auto"}).memory_mb is None
    assert parse_model({**base, "memory_mb": 3008}).memory_mb == 3008
    for bad in ("lots", 64, 20000, True):
        with pytest.raises(ConfigError, match="field 'memory_mb': must be auto or an integer"):
            parse_model({**base, "memory_mb": bad})
    with pytest.raises(ConfigError, match="field 'image_budget_mb'"):
        parse_model({**base, "image_budget_mb": 0})


def test_gpu_batching_limits_are_validated_and_reach_the_endpoint():
    from infra.spec import ModelsFile
    from infra.template import Deployment, generate_template

    gpu = {"name": "big", "source": "x", "task": "feature-extraction", "target": "gpu",
           "max_batch_tokens": 8192, "max_batch_requests": 64}
    spec = parse_model(gpu)
    assert (spec.max_batch_tokens, spec.max_batch_requests, spec.max_concurrent_requests) == (8192, 64, None)
    with pytest.raises(ConfigError, match="field 'max_batch_tokens': must be an integer from 8"):
        parse_model({**gpu, "max_batch_tokens": 4})
    with pytest.raises(ConfigError, match="field 'max_concurrent_requests': is for the gpu target only"):
        parse_model({"name": "m", "source": "x", "task": "feature-extraction", "max_concurrent_requests": 8})
    template = generate_template(ModelsFile(models=(spec,)), [Deployment(spec=spec, version=1, context="build/big")],
                                 "s3://bucket/registry")
    model = next(r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model")
    env = model["Properties"]["PrimaryContainer"]["Environment"]
    assert env["MODELFN_MAX_BATCH_TOKENS"] == "8192" and env["MODELFN_MAX_BATCH_REQUESTS"] == "64"
    assert "MODELFN_MAX_CONCURRENT_REQUESTS" not in env


# -- modelfn build ---------------------------------------------------------------------------------

def test_auto_memory_is_the_estimate_in_the_template(tmp_path, registry_dir, tiny_bundle):
    models = write_models(tmp_path / "models.yaml", max_batch=32, max_tokens=128)
    logged: list[str] = []
    result = build(BuildSettings(models_file=models, registry=str(registry_dir), out=tmp_path / "out" / "build",
                                 template=tmp_path / "out" / "template.yaml", python_version="3.11",
                                 wheelhouse=WHEELHOUSE), log=logged.append)
    expected = estimate_bundle(tiny_bundle("feature-extraction"), max_batch=32, max_tokens=128).auto_mb
    template = yaml.safe_load(result.template.read_text())
    assert template["Resources"]["TinyFunction"]["Properties"]["MemorySize"] == expected
    assert any(line.startswith("tiny: image contents ") and f"memory {expected} MB" in line for line in logged)


def test_explicit_memory_below_the_estimate_is_refused(tmp_path, registry_dir, capsys, tiny_bundle):
    need = estimate_bundle(tiny_bundle("feature-extraction"), max_batch=1024, max_tokens=128).need_mb
    assert need > 512
    models = write_models(tmp_path / "models.yaml", memory_mb=512, max_batch=1024, max_tokens=128)
    code, err = run_build(tmp_path, registry_dir, models, capsys)
    assert_refused(tmp_path, code, err, "model 'tiny'", f"need {need} MB", "weights ", "activations ", "runtime ",
                   "has memory_mb 512", f"set memory_mb >= {need}", "lower max_batch")


def test_generation_memory_below_the_kv_cache_is_refused(tmp_path, registry_dir, capsys):
    code, err = run_build(tmp_path, registry_dir, lm_models(tmp_path / "models.yaml", memory_mb=128,
                                                            context_length=4096), capsys)
    assert_refused(tmp_path, code, err, "model 'lm'", "KV ", "prefill ", "has memory_mb 128", "lower context_length")


def test_a_model_over_lambdas_ceiling_is_refused_even_on_auto(tmp_path, registry_dir, capsys):
    code, err = run_build(tmp_path, registry_dir, lm_models(tmp_path / "models.yaml", context_length=131072), capsys)
    assert_refused(tmp_path, code, err, "model 'lm'", f"over Lambda's {LAMBDA_MAX_MB} MB", "target: gpu")


def test_an_image_over_its_budget_is_refused(tmp_path, registry_dir, capsys):
    models = write_models(tmp_path / "models.yaml", image_budget_mb=1)
    code, err = run_build(tmp_path, registry_dir, models, capsys)
    assert_refused(tmp_path, code, err, "model 'tiny'", "image contents", "exceed image_budget_mb 1")


def test_image_contents_count_installed_files_less_the_trimmed_ones(tiny_bundle):
    import zipfile

    pins = pinned_requirements("3.11", "x86_64")
    wheelhouse = WHEELHOUSE / "x86_64-py3.11"
    pinned = next(p for p in pins if p.startswith("onnxruntime==")).partition("==")[2]
    onnxruntime = next(wheelhouse.glob(f"onnxruntime-{pinned}-*.whl"))  # the cache may keep other versions
    with zipfile.ZipFile(onnxruntime) as archive:
        everything = sum(i.file_size for i in archive.infolist())
        tooling = sum(i.file_size for i in archive.infolist() if i.filename.startswith("onnxruntime/transformers/"))
        c_api = sum(i.file_size for i in archive.infolist() if i.filename.startswith("onnxruntime/capi/libonnxruntime.so"))
    assert tooling > 0 and c_api > 0 and installed_bytes(onnxruntime) == everything
    # an encoder image drops the tooling and the C API library; a generation image keeps the library
    assert installed_bytes(onnxruntime, trim_for(pins)) <= everything - tooling - c_api
    genai_pins = pinned_requirements("3.11", "x86_64", extra=("onnxruntime-genai",))
    assert installed_bytes(onnxruntime, trim_for(genai_pins)) > everything - tooling - c_api
    baked = image_contents(pins, wheelhouse, bundle_bytes=1234)
    assert baked.bundle_bytes == 1234 and baked.total_bytes == image_contents(pins, wheelhouse).total_bytes + 1234
    with pytest.raises(ConfigError, match="no wheel for torch==0"):
        image_contents(pins + ["torch==0"], wheelhouse)


def test_an_image_that_would_install_torch_is_refused():
    # accelerate is a real package here whose dependency closure pulls torch in
    pins = pinned_requirements("3.11", "x86_64", extra=("accelerate",))
    assert any(p.startswith("torch==") for p in pins)
    with pytest.raises(ConfigError) as caught:
        refuse_forbidden("tiny", pins)
    assert "model 'tiny'" in str(caught.value) and "would install torch" in str(caught.value)
    assert "\n" not in str(caught.value)
    refuse_forbidden("tiny", pinned_requirements("3.11", "x86_64"))  # the runtime set itself is clean
    assert {"torch", "transformers", "optimum"} <= set(FORBIDDEN)


def test_registry_reads_one_file_checked_against_its_sha256(tmp_path, gen_bundle):  # noqa: F811
    root = tmp_path / "registry"
    registry = open_registry(str(root))
    version = registry.push("lm", gen_bundle("llama")).version
    manifest = registry.show("lm", version).manifest
    assert registry.read_file("lm", version, manifest, GENAI_CONFIG_FILE) == (gen_bundle("llama") / GENAI_CONFIG_FILE).read_bytes()
    stored = root / "models" / "lm" / "versions" / str(version) / GENAI_CONFIG_FILE
    stored.write_bytes(stored.read_bytes().replace(b"{", b"[", 1))
    with pytest.raises(IntegrityError, match="sha256"):
        registry.read_file("lm", version, manifest, GENAI_CONFIG_FILE)


def test_a_fetched_bundle_larger_than_lambdas_tmp_is_refused(tmp_path, tiny_bundle, capsys):
    """A version whose manifest lists an 11 GB model file (the size is all the check reads): fetched at
    cold start, it could never fit Lambda's 10,240 MB of /tmp."""
    from functions.manifest import MANIFEST_FILE

    root = tmp_path / "registry"
    registry = open_registry(str(root))
    registry.promote("tiny", "prod", registry.push("tiny", tiny_bundle("feature-extraction")).version)
    stored = root / "models" / "tiny" / "versions" / "1" / MANIFEST_FILE
    manifest = json.loads(stored.read_text())
    manifest["files"][MODEL_FILE]["size"] = 11 * 2**30
    stored.write_text(json.dumps(manifest))
    code, err = run_build(tmp_path, root, write_models(tmp_path / "models.yaml", memory_mb=10240), capsys)
    assert_refused(tmp_path, code, err, "model 'tiny'", "MB of /tmp", f"over Lambda's {LAMBDA_MAX_MB} MB")


@pytest.mark.parametrize("architecture,candidate", [("vit", None), ("convnext", None),
                                                    ("vit", "int8-dynamic-per-channel-avx2")])
def test_image_models_count_patches_as_tokens(tiny_image_bundle, tiny_image_model_dir, architecture, candidate):
    """Whichever candidate the export chose: a dynamically quantized graph feeds the pixels through
    DynamicQuantizeLinear to a ConvInteger, which must not hide the patch embedding (it once read a
    ViT as 7 wide, its label count, with one head)."""
    config = json.loads((tiny_image_model_dir(architecture) / "config.json").read_text())
    bundle = tiny_image_bundle(architecture, **({"strategy": f"fixed:{candidate}"} if candidate else {}))
    shape = encoder_shape((bundle / MODEL_FILE).read_bytes())
    image = read_manifest(bundle).runtime.image
    side = image.crop_height or image.height or image.shortest_edge
    if architecture == "vit":
        assert (shape.hidden, shape.heads, shape.patch) == (config["hidden_size"], config["num_attention_heads"],
                                                            config["patch_size"])
    else:  # no attention in a ConvNeXt: no quadratic term
        assert (shape.hidden, shape.heads, shape.patch) == (config["hidden_sizes"][0], 0, config["patch_size"])
    tokens = (side // shape.patch) ** 2 + 1
    est = estimate_bundle(bundle, max_batch=4, max_tokens=256)
    expected = FLOAT_BYTES * 4 * tokens * (HIDDEN_BUFFERS * shape.hidden + shape.heads * tokens)
    assert est.working == (("activations", expected / 2**20),)


def test_speech_models_are_sized_from_the_audio_encoder_and_build(tmp_path, tiny_speech_bundle, tiny_whisper_dir,
                                                                   capsys):
    """A speech bundle has no model.onnx: its need is the encoder over one whole 30 s window."""
    bundle = tiny_speech_bundle()
    config = json.loads((tiny_whisper_dir / "config.json").read_text())
    manifest = read_manifest(bundle)
    est = estimate_bundle(bundle, max_batch=32, max_tokens=256)  # one recording per call whatever max_batch says
    frames = manifest.runtime.speech.n_samples // manifest.runtime.speech.hop_length // 2
    hidden, heads = config["d_model"], config["encoder_attention_heads"]
    assert frames == config["max_source_positions"]
    assert est.working == (("activations", FLOAT_BYTES * frames * (HIDDEN_BUFFERS * hidden + heads * frames) / 2**20),)
    registry = open_registry(str(tmp_path / "registry"))
    registry.promote("asr", "prod", registry.push("asr", bundle).version)
    models = write_models(tmp_path / "models.yaml", name="asr", task="automatic-speech-recognition")
    code, err = run_build(tmp_path, tmp_path / "registry", models, capsys)
    assert code == 0, err
    template = yaml.safe_load((tmp_path / "out" / "template.yaml").read_text())
    assert template["Resources"]["AsrFunction"]["Properties"]["MemorySize"] == est.auto_mb
