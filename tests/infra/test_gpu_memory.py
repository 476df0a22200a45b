"""`modelfn build` sizes each gpu model's GPU memory against one GPU of its instance
(infra/build/gpu_memory.py, infra/gpu_instances.py): refuses what cannot fit with one line, derives
max_concurrent_generations when models.yaml leaves it unset, skips an instance type it does not know."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from functions.errors import ConfigError
from functions.manifest import (
    GENAI_CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    describe_files,
    read_manifest,
)
from infra.build.gpu_memory import (
    GPU_OVERHEAD_MB,
    MAX_DERIVED_GENERATIONS,
    estimate_gpu,
)
from infra.build.memory import HEADROOM, HIDDEN_BUFFERS, encoder_shape
from infra.cli import main as modelfn
from infra.gpu_instances import INSTANCES, gpu_instance
from infra.registry import open_registry
from infra.spec import parse_model

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".wheelhouse"
MIB = 2**20
STANDIN = "localhost/modelfn/cuda-standin:bookworm"
# Llama-3-8B's shape (config.json of meta-llama/Meta-Llama-3-8B), on the tiny llama's real files
LLAMA_8B = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_size": 128,
            "hidden_size": 4096}
LLAMA_8B_VOCAB = 128256
LLAMA_8B_WEIGHTS = 16_060_522_496  # 8.03 B parameters x 2 bytes (fp16), made up as the data file's size


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _as_gpu_bundle(source: Path, dest: Path, *, genai: dict | None = None) -> Path:
    """The tiny generation bundle declared for the gpu target in fp16, its genai_config reshaped."""
    bundle = shutil.copytree(source, dest)
    if genai is not None:
        config = json.loads((bundle / GENAI_CONFIG_FILE).read_text())
        config["model"]["decoder"].update(genai)
        config["model"]["vocab_size"] = LLAMA_8B_VOCAB
        (bundle / GENAI_CONFIG_FILE).write_text(json.dumps(config))
    manifest = read_manifest(bundle)
    dataclasses.replace(manifest, target="gpu", quantization=dataclasses.replace(manifest.quantization, requested="fp16"),
                        files=describe_files(bundle)).write(bundle)
    return bundle


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory, tiny_bundle, gen_bundle):
    """big: the tiny encoder for the gpu target (fp16); lm: the tiny llama on the gpu target; llama8b:
    the tiny llama's files with Llama-3-8B's shape in genai_config and a 16 GB weight file (made up:
    the stored manifest says so; nothing reads the data at build); shaped: Llama-3-8B's shape on the
    tiny files' real sizes. Every one with alias prod."""
    root = tmp_path_factory.mktemp("registry")
    work = tmp_path_factory.mktemp("bundles")
    registry = open_registry(str(root))
    registry.promote("big", "prod", registry.push("big", tiny_bundle(
        "feature-extraction", target="gpu", quantization="fp16")).version)
    registry.promote("lm", "prod", registry.push("lm", _as_gpu_bundle(gen_bundle("llama"), work / "lm")).version)
    for name in ("llama8b", "shaped"):
        bundle = _as_gpu_bundle(gen_bundle("llama"), work / name, genai=LLAMA_8B)
        registry.promote(name, "prod", registry.push(name, bundle).version)
    stored = root / "models" / "llama8b" / "versions" / "1" / MANIFEST_FILE
    manifest = json.loads(stored.read_text())
    data = next(name for name in manifest["files"] if name.endswith(".data"))
    manifest["files"][data]["size"] = LLAMA_8B_WEIGHTS
    stored.write_text(json.dumps(manifest))
    return root


def gpu_models(path: Path, name: str, **fields) -> Path:
    task = "feature-extraction" if name == "big" else "text-generation"
    model = {"name": name, "source": "unused-at-build", "task": task, "target": "gpu"}
    model.update(fields)
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def run_build(tmp_path: Path, registry: Path, models: Path, capsys) -> tuple[int, str, str]:
    out = tmp_path / "out"
    code = modelfn(["build", "--models-file", str(models), "--registry", str(registry), "--out", str(out / "build"),
                    "--template", str(out / "template.yaml"), "--python-version", "3.11", "--wheelhouse", str(WHEELHOUSE),
                    "--gpu-runtime", "onnxruntime", "--gpu-base-image", STANDIN])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(tmp_path: Path, code: int, err: str, *needles: str) -> None:
    assert code != 0 and err.startswith("modelfn: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out").exists()


def endpoint_environment(tmp_path: Path) -> dict:
    template = yaml.safe_load((tmp_path / "out" / "template.yaml").read_text())
    model = next(r for r in template["Resources"].values() if r["Type"] == "AWS::SageMaker::Model")
    return model["Properties"]["PrimaryContainer"]["Environment"]


def llama8b_need(context: int, generations: int, weights_bytes: int) -> int:
    """The need in MiB by hand: weights + overhead + n x KV (fp16) + one prefill's logits (fp16), + 20%."""
    kv = 2 * LLAMA_8B["num_hidden_layers"] * LLAMA_8B["num_key_value_heads"] * LLAMA_8B["head_size"] * context * 2
    logits = context * LLAMA_8B_VOCAB * 2
    total = weights_bytes / MIB + GPU_OVERHEAD_MB + (generations * kv + logits) / MIB
    return math.ceil(total * (1 + HEADROOM))


def onnx_bytes(manifest) -> int:
    return sum(f.size for name, f in manifest.files.items() if ".onnx" in name)


def stored_weights(registry_dir: Path, name: str) -> int:
    """The model files' bytes as the registry's manifest states them (llama8b: the made-up 16 GB)."""
    return onnx_bytes(open_registry(str(registry_dir)).show(name, 1).manifest)


# -- the instance table ---------------------------------------------------------------------------

def test_every_family_users_pick_is_in_the_table_with_one_gpus_usable_memory():
    for family in ("g4dn", "g5", "g6", "g6e"):
        assert {f"ml.{family}.xlarge", f"ml.{family}.12xlarge"} <= set(INSTANCES)
    assert {"ml.p4d.24xlarge", "ml.p5.48xlarge"} <= set(INSTANCES)
    l4 = gpu_instance("ml.g6.xlarge")
    assert (l4.gpus, l4.gpu.name, l4.gpu.memory_gib) == (1, "NVIDIA L4", 24)
    assert l4.gpu.usable_mb == 24 * 1024 * 15 // 16  # GDDR6 keeps 1/16 for ECC: nvidia-smi's 23,04x MiB
    assert gpu_instance("ml.p5.48xlarge").gpu.usable_mb == 80 * 1024  # HBM: ECC inline
    assert gpu_instance("ml.g5.12xlarge").gpus == 4 and gpu_instance("ml.p4d.24xlarge").gpus == 8
    assert gpu_instance("ml.z9.xlarge") is None


# -- the estimate ---------------------------------------------------------------------------------

def test_encoder_gpu_estimate_is_the_largest_batch_at_half_width(tiny_bundle):
    bundle = tiny_bundle("feature-extraction", target="gpu", quantization="fp16")
    manifest = read_manifest(bundle)
    shape = encoder_shape((bundle / MODEL_FILE).read_bytes())
    read = lambda name: (bundle / name).read_bytes()
    tokens = min(128, manifest.runtime.max_length)
    est = estimate_gpu(manifest, read, max_batch=4, max_tokens=128, max_batch_tokens=tokens * 10,
                       max_batch_requests=64)
    assert (est.unit, est.units, est.row_tokens) == ("row", 10, tokens)  # the token budget decides the rows
    row = 2 * tokens * (HIDDEN_BUFFERS * shape.hidden + shape.heads * tokens)  # fp16 activations of one row
    assert est.unit_mb == pytest.approx(row / MIB)
    assert est.weights_mb == pytest.approx(onnx_bytes(manifest) / MIB)  # once: no CPU pre-packed copy
    assert est.need_mb() == math.ceil((est.weights_mb + GPU_OVERHEAD_MB + 10 * row / MIB) * (1 + HEADROOM))
    # a request of more rows than the budget holds runs alone: max_batch rows
    assert estimate_gpu(manifest, read, max_batch=32, max_tokens=128, max_batch_tokens=tokens * 10).units == 32
    # unset limits: the server's defaults (16384 tokens, 256 rows)
    assert estimate_gpu(manifest, read, max_batch=1, max_tokens=128).units == min(256, 16384 // tokens)


def test_generation_gpu_estimate_is_kv_per_generator_and_one_prefill(gen_bundle, tmp_path):
    bundle = _as_gpu_bundle(gen_bundle("llama"), tmp_path / "b", genai=LLAMA_8B)
    manifest = read_manifest(bundle)
    est = estimate_gpu(manifest, lambda name: (bundle / name).read_bytes(), max_batch=1, max_tokens=16,
                       context_length=4096, max_concurrent_generations=3)
    assert (est.unit, est.units) == ("KV", 3)
    assert est.unit_mb == 2 * 32 * 8 * 128 * 4096 * 2 / MIB == 512  # fp16 KV of one generator
    assert est.prefill_mb == 4096 * LLAMA_8B_VOCAB * 2 / MIB  # every position's logits, no attention scores
    assert est.need_mb() == llama8b_need(4096, 3, onnx_bytes(manifest))


# -- models.yaml ----------------------------------------------------------------------------------

def test_max_concurrent_generations_is_for_gpu_text_generation():
    gen = {"name": "m", "source": "x", "task": "text-generation", "target": "gpu"}
    assert parse_model(gen).max_concurrent_generations is None
    assert parse_model({**gen, "max_concurrent_generations": 12}).max_concurrent_generations == 12
    with pytest.raises(ConfigError, match="'max_concurrent_generations': must be an integer from 1 to 1024"):
        parse_model({**gen, "max_concurrent_generations": 0})
    with pytest.raises(ConfigError, match="'max_concurrent_generations': applies to text-generation only"):
        parse_model({**gen, "task": "feature-extraction", "max_concurrent_generations": 4})
    with pytest.raises(ConfigError, match="'max_concurrent_generations': is for the gpu target only"):
        parse_model({**gen, "target": "lambda", "max_concurrent_generations": 4})


# -- modelfn build --------------------------------------------------------------------------------

def test_a_model_whose_weights_leave_no_room_for_one_generation_is_refused(tmp_path, registry_dir, capsys):
    models = gpu_models(tmp_path / "models.yaml", "llama8b", context_length=8192)  # ml.g6.xlarge: one L4
    code, _, err = run_build(tmp_path, registry_dir, models, capsys)
    need = llama8b_need(8192, 1, stored_weights(registry_dir, "llama8b"))
    assert need > 23040  # one L4's usable MiB
    assert_refused(tmp_path, code, err, "model 'llama8b'", f"need {need} MiB", "for one generation",
                   "over the 23040 MiB of one NVIDIA L4", "ml.g6.xlarge", "fix: a lower context_length",
                   "or instance_type ml.g6e.xlarge")


def test_more_concurrent_generations_than_fit_are_refused_with_the_most_that_do(tmp_path, registry_dir, capsys):
    have = gpu_instance("ml.g6e.xlarge").gpu.usable_mb
    fits = max(n for n in range(1, 64) if llama8b_need(8192, n, stored_weights(registry_dir, "llama8b")) <= have)
    models = gpu_models(tmp_path / "models.yaml", "llama8b", context_length=8192, instance_type="ml.g6e.xlarge",
                        max_concurrent_generations=fits + 8)
    code, _, err = run_build(tmp_path, registry_dir, models, capsys)
    assert_refused(tmp_path, code, err, "model 'llama8b'", f"{fits + 8} x KV 1024", f"over the {have} MiB",
                   "NVIDIA L40S", f"fix: max_concurrent_generations <= {fits}", "a lower context_length")


def test_unset_concurrent_generations_are_derived_and_reach_the_endpoint(tmp_path, registry_dir, capsys):
    """Llama-3-8B's shape at a 32k window on one L4: the KV cache of a generator is 4 GiB, so few fit."""
    models = gpu_models(tmp_path / "models.yaml", "shaped", context_length=32768)
    code, out, err = run_build(tmp_path, registry_dir, models, capsys)
    assert code == 0, err
    weights = stored_weights(registry_dir, "shaped")
    expected = max(n for n in range(MAX_DERIVED_GENERATIONS + 1) if llama8b_need(32768, n, weights) <= 23040)
    assert 1 <= expected < MAX_DERIVED_GENERATIONS
    assert endpoint_environment(tmp_path)["MODELFN_MAX_CONCURRENT_GENERATIONS"] == str(expected)
    line = next(line for line in out.splitlines() if line.startswith("shaped: image contents"))
    assert f"need {llama8b_need(32768, expected, weights)} MiB" in line and "of 23040 MiB on ml.g6.xlarge" in line
    assert f"max_concurrent_generations {expected} (derived" in line


def test_derived_generations_stop_at_the_cap_and_a_set_count_that_fits_is_kept(tmp_path, registry_dir, capsys):
    code, out, err = run_build(tmp_path, registry_dir, gpu_models(tmp_path / "models.yaml", "lm"), capsys)
    assert code == 0, err
    assert endpoint_environment(tmp_path)["MODELFN_MAX_CONCURRENT_GENERATIONS"] == str(MAX_DERIVED_GENERATIONS)
    shutil.rmtree(tmp_path / "out")
    code, out, err = run_build(tmp_path, registry_dir,
                               gpu_models(tmp_path / "models.yaml", "lm", max_concurrent_generations=5), capsys)
    assert code == 0, err
    assert endpoint_environment(tmp_path)["MODELFN_MAX_CONCURRENT_GENERATIONS"] == "5"
    assert "(derived" not in out and "5 x KV" in out


def test_an_encoder_batch_over_the_gpu_is_refused_with_a_budget_that_fits(tmp_path, registry_dir, tiny_bundle, capsys):
    bundle = tiny_bundle("feature-extraction", target="gpu", quantization="fp16")
    manifest = read_manifest(bundle)
    est = estimate_gpu(manifest, lambda name: (bundle / name).read_bytes(), max_batch=32, max_tokens=256,
                       max_batch_tokens=1 << 24, max_batch_requests=1 << 16)
    have = gpu_instance("ml.g4dn.xlarge").gpu.usable_mb
    assert est.need_mb() > have
    rows = max(n for n in range(1, est.units) if est.need_mb(n) <= have)
    models = gpu_models(tmp_path / "models.yaml", "big", instance_type="ml.g4dn.xlarge", max_tokens=256,
                        max_batch_tokens=1 << 24, max_batch_requests=1 << 16)
    code, _, err = run_build(tmp_path, registry_dir, models, capsys)
    assert_refused(tmp_path, code, err, "model 'big'", f"need {est.need_mb()} MiB", f"over the {have} MiB of one NVIDIA T4",
                   f"fix: max_batch_tokens <= {rows * est.row_tokens}", "instance_type ")


def test_an_encoder_that_fits_builds_and_an_unknown_instance_is_skipped(tmp_path, registry_dir, capsys):
    code, out, err = run_build(tmp_path, registry_dir, gpu_models(tmp_path / "models.yaml", "big"), capsys)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("big: image contents"))
    assert "GPU memory need " in line and "rows x" in line and "on ml.g6.xlarge (1 x NVIDIA L4" in line
    assert "MODELFN_MAX_CONCURRENT_GENERATIONS" not in endpoint_environment(tmp_path)
    shutil.rmtree(tmp_path / "out")
    code, out, err = run_build(tmp_path, registry_dir,
                               gpu_models(tmp_path / "models.yaml", "lm", instance_type="ml.z9.xlarge"), capsys)
    assert code == 0, err
    assert "GPU memory check skipped: ml.z9.xlarge is not in modelfn's GPU instance table" in out
    assert "the server's default 8" in out
    assert "MODELFN_MAX_CONCURRENT_GENERATIONS" not in endpoint_environment(tmp_path)
