"""Speech recognition benchmark: cold start and warm latency, modelfn handler vs transformers pipeline.

    python bench/speech_bench.py [--reps 3] [--size tiny|whisper-tiny] [--seconds 5] [--timestamps]

No Whisper checkpoint is available offline (no PyPI package ships whisper-tiny weights), so the
model is a random-weight Whisper built from a config (tests/tinymodels.py): ``tiny`` is the test
model (width 32, 2+2 layers), ``whisper-tiny`` has whisper-tiny's encoder and decoder sizes (width
384, 4+4 layers, 6 heads, 39 M parameters less the 51865-token embedding: the byte tokenizer has
266 tokens, so the output projection is smaller than the real one). Exported with `modelfn export`
(fp32 and int8 candidates, parity gate). Measured in one run, interleaved:
  * process start -> first answer for one 5 s 16 kHz WAV, fresh interpreter each time: the modelfn
    Lambda ``handler`` (JSON with base64, as a client sends it) and a transformers pipeline (torch);
  * warm median latency per request in the same processes.
``--timestamps`` asks both for segment timestamps (return_timestamps=True); ``--seconds`` past 30
makes the recording long-form (Whisper's window-by-window decoding in both; max_new_tokens then
bounds each window). Both decode greedily (the pipeline is given num_beams=1; its own default for Whisper is 5 beams)
and both stop at 32 new tokens (random weights rarely emit end-of-text, so both do the same work).
Writes bench/speech.md (a section per size).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.pipeline_compare import medians, ratio_rows, run_probe, write_section  # noqa: E402
WORK = ROOT / ".modelfn" / "bench-speech"
WARM = 10
NEW_TOKENS = 32
SIZES = {"tiny": {}, "whisper-tiny": dict(d_model=384, layers=4, heads=6, ffn=1536, max_target_positions=448)}

MODELFN = """
import base64, json, os, sys, time
t0 = time.perf_counter()
from functions.handler import handler
class C:
    function_name, memory_limit_in_mb, aws_request_id = "bench", 2048, "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:1:function:bench"
body = json.dumps({"inputs": base64.b64encode(open(sys.argv[1], "rb").read()).decode(),
                   "parameters": {"max_new_tokens": int(sys.argv[3]), "return_timestamps": sys.argv[4] == "1"}})
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/models/bench/predict", "rawQueryString": "",
         "headers": {"content-type": "application/json", "host": "x"}, "isBase64Encoded": False,
         "requestContext": {"requestId": "r", "http": {"method": "POST", "path": "/models/bench/predict",
                            "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"}, "stage": "$default"},
         "body": body}
sys.stdout = open(os.devnull, "w")
out = handler(event, C()); first = time.perf_counter() - t0
assert out["statusCode"] == 200, out
warm = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); handler(event, C()); warm.append(time.perf_counter() - t)
print(json.dumps({"first_s": first, "warm": warm, "answer": json.loads(out["body"])}), file=sys.stderr)
sys.stderr.flush(); os._exit(0)
"""

PIPELINE = """
import io, json, os, sys, time
t0 = time.perf_counter()
os.environ["HF_HUB_OFFLINE"] = "1"
import soundfile as sf
import torch
from transformers import pipeline
asr = pipeline("automatic-speech-recognition", model=sys.argv[5], device="cpu")
kwargs = {"generate_kwargs": {"num_beams": 1, "max_new_tokens": int(sys.argv[3])}}
if sys.argv[4] == "1":
    kwargs["return_timestamps"] = True
def once():
    samples, rate = sf.read(sys.argv[1], dtype="float32")
    return asr({"raw": samples, "sampling_rate": rate}, **kwargs)
answer = once(); first = time.perf_counter() - t0
warm = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); once(); warm.append(time.perf_counter() - t)
answer = {k: [{"text": c["text"], "timestamp": list(c["timestamp"])} for c in v] if k == "chunks" else v
          for k, v in answer.items()}
print(json.dumps({"first_s": first, "warm": warm, "answer": answer}), file=sys.stderr)
sys.stderr.flush(); os._exit(0)
"""


def recording(path: Path, seconds: float = 5.0) -> Path:
    """A syllable-like 150 Hz tone with 4 Hz amplitude modulation and a little noise, 16 kHz WAV."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * 16_000)) / 16_000
    samples = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    samples += 0.01 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(path, samples.astype(np.float32), 16_000, subtype="PCM_16")
    return path


def run(script: str, args: list[str], env: dict) -> dict:
    return run_probe(script, args, env, timeout_s=900)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--seconds", type=float, default=5.0, help="recording length (past 30: long-form)")
    parser.add_argument("--timestamps", action="store_true", help="return_timestamps=True in both")
    args = parser.parse_args()
    from tests.tinymodels import build_tiny_whisper_model

    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"{args.size}-source"
    if not (source / "config.json").is_file():
        build_tiny_whisper_model(source, **SIZES[args.size])
    bundle = WORK / f"{args.size}-bundle"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "infra/cli/__init__.py", "export", "--source", str(source), "--task",
                        "automatic-speech-recognition", "--out", str(bundle), "--overwrite"], cwd=ROOT, check=True)
    from functions.manifest import read_manifest

    manifest = read_manifest(bundle)
    audio = recording(WORK / f"speech-{args.seconds:g}s.wav", args.seconds)
    threads = "2"
    timed = "1" if args.timestamps else "0"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELFN_BUNDLE_DIR": str(bundle), "MODELFN_MODEL_NAME": "bench",
           "MODELFN_MAX_AUDIO_SECONDS": str(max(30, int(args.seconds) + 1)),
           "MODELFN_THREADS": threads, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}  # as bench/image_bench.py: torch's idle threads must not spin
    results: dict[str, list[dict]] = {"modelfn": [], "pipeline": []}
    for _ in range(args.reps):
        results["modelfn"].append(run(MODELFN, [str(audio), str(WARM), str(NEW_TOKENS), timed], env))
        results["pipeline"].append(run(PIPELINE, [str(audio), str(WARM), str(NEW_TOKENS), timed, str(source)], env))
    rows = medians(results, skip_warm=1)
    same = results["modelfn"][0]["answer"] == results["pipeline"][0]["answer"]
    key = args.size + (f"-{args.seconds:g}s" if args.seconds != 5.0 else "") + ("-timestamps" if args.timestamps else "")
    windows = "" if args.seconds <= 30 else " (long-form)"
    table = [
        f"## {key}: {manifest.quantization.chosen} bundle, {threads} threads, {args.seconds:g} s WAV{windows}, "
        f"{NEW_TOKENS} new tokens{' per window' if windows else ''}, "
        f"{'segment timestamps, ' if args.timestamps else ''}"
        f"median of {args.reps} cold starts and {args.reps * (WARM - 1)} warm requests",
        "",
        *ratio_rows(rows),
        "",
        f"Same {'text and chunks' if args.timestamps else 'text'} from both: {same}. Both with {threads} threads and OMP_WAIT_POLICY=PASSIVE; host load "
        f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. Chosen candidate: {manifest.quantization.chosen} "
        f"({manifest.quantization.reason}); parity {manifest.parity.metrics}; candidates: "
        + ", ".join(f"{c.name} {c.latency_ms:.0f} ms/recording {c.metrics}" for c in manifest.quantization.candidates)
        + ".",
        "",
    ]
    text = "\n".join(table)
    print(text)
    out = ROOT / "bench" / "speech.md"
    header = "# Speech recognition: modelfn vs transformers pipeline (bench/speech_bench.py)\n\n"
    write_section(out, header, key, text)


if __name__ == "__main__":
    main()
