"""`modelfn quickstart`: the whole path of a model on embedded defaults, end to end.

export (quantized, parity-gated) -> push to the registry -> promote -> `modelfn build` ->
`sam build` -> `sam local start-api` -> predict, /v1/embeddings, a chat and a transcription over HTTP. Where no container
engine can be had, it says so and serves the same handler under the real Lambda Runtime
Interface Emulator on the host instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import defaults

SENTENCES = [
    "modelfn puts each model behind its own HTTPS endpoint.",
    "Every model gets a serverless function of its own.",
    "The cat sat quietly on the warm windowsill.",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="export, register, build and serve a model locally, end to end",
        description="Run the whole path on embedded defaults: export -> registry push + promote -> "
                    "modelfn build -> sam build -> sam local start-api -> HTTP calls.")
    p.add_argument("--models-file", default=defaults.MODELS_FILE, help="default: %(default)s")
    p.add_argument("--model", help="model to run (default: the first lambda model in models.yaml)")
    p.add_argument("--workdir", default=str(defaults.QUICKSTART_DIR),
                   help="where the template and build contexts go (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="re-export even if a valid bundle exists")
    p.add_argument("--no-containers", action="store_true",
                   help="skip sam build / start-api; serve under the emulator on the host")
    p.add_argument("--wheelhouse", default=str(defaults.WHEELHOUSE), help="host wheel cache for the images (default: %(default)s)")
    p.set_defaults(func=run)


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(started: float) -> None:
    print(f"   ({time.perf_counter() - started:.1f}s)", flush=True)


def run(args: argparse.Namespace) -> int:
    from functions.errors import ConfigError
    from infra.spec import load_models_file

    from infra.cli import main as modelfn
    from infra.registry import open_registry

    models_file = load_models_file(args.models_file)
    specs = [models_file.get(args.model)] if args.model else \
        [s for s in models_file.models if s.target == "lambda"]
    if not specs:
        raise ConfigError(f"{models_file.path}: no lambda model to run")
    workdir = Path(args.workdir).absolute()
    total = time.perf_counter()

    t = _step("1. export " + "; ".join(f"{s.name} ({s.source}, {s.task}, {s.quantization} for {s.architecture})"
                                      for s in specs))
    for spec in specs:
        code = _export(modelfn, args, spec)
        if code:
            return code
    _done(t)

    t = _step(f"2. push to the registry {models_file.registry} and promote")
    registry = open_registry(models_file.registry)
    versions = {spec.name: _push(registry, spec) for spec in specs}
    _done(t)

    from infra.local import AWS_BASE_IMAGE, container_engine_problem

    problem = "--no-containers given" if args.no_containers else container_engine_problem(AWS_BASE_IMAGE)
    # Without an engine the images are not built here; the contexts target $MODELFN_IMAGE_PYTHON or the AWS base.
    python_version = defaults.image_python()
    if problem is None:
        from infra.local import image_python

        python_version = image_python(AWS_BASE_IMAGE)

    t = _step(f"3. modelfn build (images for Python {python_version}) -> {workdir / 'template.yaml'}")
    # sam local invokes functions buffered: generative models answer `stream: true` as one SSE body.
    code = modelfn(["build", "--models-file", str(Path(args.models_file).absolute()),
                    "--registry", models_file.registry, "--out", str(workdir / defaults.BUILD_DIR),
                    "--template", str(workdir / "template.yaml"), "--python-version", python_version,
                    "--wheelhouse", args.wheelhouse, "--no-stream"])
    if code:
        return code
    _done(t)

    if problem is None:
        from infra.local import StartApi, sam

        images = _ImageStore()  # what is in the store before this run builds anything
        try:
            t = _step("4. sam build")
            sam(workdir, "build")
            _done(t)
            t = _step("5. sam local start-api, then HTTP calls")
            with StartApi(workdir) as api:
                print(f"   serving at {api.url} (started in {time.perf_counter() - t:.1f}s)")
                for spec in specs:
                    _call_http(api.url, spec)
            _done(t)
        finally:  # a failed run cleans up too: the images it replaced are garbage either way
            images.remove_leftovers({spec.name for spec in specs})
    else:
        from infra.emulator import Emulator, api_event

        print(f"\n== 4. containers skipped: {problem}")
        print("   serving the same handler under the Lambda Runtime Interface Emulator on this host instead")
        t = _step("5. aws-lambda-rie + awslambdaric functions.handler.handler, then invocations")
        for spec in specs:
            version = versions[spec.name]
            pulled = workdir / "pulled" / f"{spec.name}-v{version}"
            if not pulled.exists():
                registry.pull(spec.name, version, pulled)
            env = {"MODELFN_MODEL_NAME": spec.name, "MODELFN_MODEL_VERSION": str(version),
                   "MODELFN_MAX_BATCH": str(spec.max_batch), "MODELFN_MAX_TOKENS": str(spec.max_tokens)}
            with Emulator(pulled, env=env) as emu:
                def call(method, path, body=None):
                    response = emu.invoke(api_event(method, path, body))
                    return response["statusCode"], _decode(response.get("body"))
                _show_calls(call, spec)
        _done(t)
    # One encoder and one generative model, each as its GPU container would serve it.
    shown = [next((s for s in specs if (s.task == "text-generation") == generative), None) for generative in (False, True)]
    shown = [s for s in shown if s is not None]
    if shown:
        t = _step(f"6. the GPU tier's server (SageMaker contract) on {', '.join(s.name for s in shown)}, CPU provider here")
        for spec in shown:
            _show_gpu_server(spec)
        _done(t)
    print(f"\nquickstart finished in {time.perf_counter() - total:.1f}s. To deploy, on a machine with Docker and "
          "AWS credentials: modelfn build && sam build && sam deploy --guided")
    return 0


def _export(modelfn, args, spec) -> int:
    """Export ``spec`` unless a bundle that passes its sha256 check is already there."""
    from functions.errors import BundleError
    from functions.manifest import verify_bundle

    bundle = defaults.BUNDLES_DIR / spec.name
    try:
        if args.fresh:
            raise BundleError("fresh export requested")
        manifest = verify_bundle(bundle)
        print(f"   {spec.name}: reusing the verified bundle in {bundle} (quickstart --fresh re-exports)")
        print(f"   chosen {manifest.quantization.chosen}: " +
              ", ".join(f"{k} {v:.4f}" for k, v in sorted(manifest.parity.metrics.items())))
        return 0
    except BundleError:
        return modelfn(["export", spec.name, "--models-file", args.models_file, "--out", str(bundle), "--overwrite"])


def _push(registry, spec) -> int:
    """Push the bundle and move the alias to it (only when it moves: a no-op promote adds history)."""
    from infra.registry import NotInRegistry

    pushed = registry.push(spec.name, defaults.BUNDLES_DIR / spec.name, actor="quickstart")
    try:
        current = registry.resolve(spec.name, spec.alias)
    except NotInRegistry:
        current = None
    if current != pushed.version:
        registry.promote(spec.name, spec.alias, pushed.version, actor="quickstart", reason="quickstart")
    print(f"   {spec.name} version {pushed.version} ({'new' if pushed.created else 'same content as before'}); "
          f"{spec.alias} -> {pushed.version} (was {current or 'unset'}); "
          f"history has {len(registry.history(spec.name, spec.alias))} entries")
    return pushed.version


class _ImageStore:
    """The container engine's images before this run's builds, to remove what the builds leave
    untagged afterwards (infra.image_cleanup), so repeated runs do not pile up old builds."""

    def __init__(self):
        import docker

        from infra.image_cleanup import list_images

        try:
            self.client = docker.from_env(timeout=120)
            self.before = list_images(self.client)
        except docker.errors.DockerException as exc:  # sam reaches the engine its own way; not fatal here
            print(f"   (cannot list the engine's images, so none will be cleaned up: {exc})")
            self.before = None

    def remove_leftovers(self, models: set[str]) -> None:
        import docker

        from export.report import human_size
        from infra.image_cleanup import remove_leftovers

        if self.before is None:
            return
        try:
            removed, freed = remove_leftovers(self.client, self.before, models)
        except docker.errors.DockerException as exc:
            print(f"   (cannot clean up the engine's images: {exc})")
            return
        print(f"   removed {removed} untagged image{'s' if removed != 1 else ''} this run's builds replaced: "
              f"{human_size(freed)} reclaimed" if removed else "   this run's builds left no untagged images")


def _decode(body) -> object:
    """A JSON answer, or the text of a server-sent-events answer."""
    if not body:
        return None
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return json.loads(text)
    except ValueError:
        return text


def _call_http(base: str, spec) -> None:
    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(base + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
    _show_calls(call, spec)


def _show_calls(call, spec) -> None:
    """Call health, info, predict and the model's OpenAI route; print answers and timings."""
    import numpy as np

    print(f"   -- {spec.name} ({spec.task})")
    for method, path, body in (("GET", "/health", None), ("GET", f"/models/{spec.name}", None)):
        started = time.perf_counter()
        status, answer = call(method, path, body)
        print(f"   {method} {path} -> {status} in {1000 * (time.perf_counter() - started):.0f} ms: "
              f"{json.dumps(answer)[:160]}")
    if spec.task == "text-generation":
        _show_chat(call, spec)
        return
    if spec.task == "automatic-speech-recognition":
        _show_transcription(call, spec)
        return
    inputs = SENTENCES if spec.task == "feature-extraction" else SENTENCES[0]
    status, answer, timings = _timed_predict(call, spec, {"inputs": inputs}, 11)
    print(f"   POST /models/{spec.name}/predict -> {status}: first call {timings[0]:.0f} ms, "
          f"then median {statistics.median(timings[1:]):.0f} ms over 10 calls (round trip)")
    if spec.task != "feature-extraction":
        print(f"   answer: {json.dumps(answer)[:300]}")
        return
    vectors = np.asarray(answer, dtype=np.float64)
    print(f"   {len(vectors)} embeddings of dimension {vectors.shape[1]}; first: "
          f"[{', '.join(f'{x:.4f}' for x in vectors[0][:4])}, ...]")
    status, answer = call("POST", "/v1/embeddings", {"input": SENTENCES, "model": spec.name})
    if status != 200:
        print(f"   POST /v1/embeddings -> {status}: {answer}", file=sys.stderr)
        raise SystemExit(1)
    data = np.asarray([d["embedding"] for d in sorted(answer["data"], key=lambda d: d["index"])])
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    similarity = data @ data.T
    print(f"   POST /v1/embeddings -> {status}: usage {answer.get('usage')}")
    for i, text in enumerate(SENTENCES):
        others = ", ".join(f"{similarity[i, j]:.2f}" for j in range(len(SENTENCES)))
        print(f"     cos[{i}] = [{others}]  {text}")


QUESTION = "What is the capital of France?"


def _timed_predict(call, spec, body: dict, times: int) -> tuple[int, object, list[float]]:
    """POST ``body`` to the model's predict route ``times`` times: (status, last answer, round trips in ms).
    A non-200 answer is printed and ends the quickstart."""
    timings = []
    for _ in range(times):
        started = time.perf_counter()
        status, answer = call("POST", f"/models/{spec.name}/predict", body)
        timings.append(1000 * (time.perf_counter() - started))
        if status != 200:
            print(f"   POST /models/{spec.name}/predict -> {status}: {answer}", file=sys.stderr)
            raise SystemExit(1)
    return status, answer, timings


def _show_transcription(call, spec) -> None:
    """A recording sent as base64 JSON (the raw audio/wav body works too, and /v1/audio/transcriptions)."""
    import base64

    from export.speech import SPEECH_SAMPLE, SPEECH_SAMPLE_TEXT as SPEECH_TEXT

    body = {"inputs": base64.b64encode(SPEECH_SAMPLE.read_bytes()).decode()}
    status, answer, timings = _timed_predict(call, spec, body, 3)
    print(f"   POST /models/{spec.name}/predict ({SPEECH_SAMPLE.name}, {SPEECH_SAMPLE.stat().st_size // 1024} KiB "
          f"as base64) -> {status}: first call {timings[0]:.0f} ms, then median {statistics.median(timings[1:]):.0f} ms")
    print(f"     said:  {SPEECH_TEXT}")
    print(f"     heard: {answer.get('text', answer).strip() if isinstance(answer, dict) else answer}")


def _show_chat(call, spec) -> None:
    """A chat answer (greedy, so it repeats), then the same question streamed as server-sent events."""
    body = {"model": spec.name, "temperature": 0, "max_tokens": 32,
            "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    status, answer = call("POST", "/v1/chat/completions", body)
    elapsed = 1000 * (time.perf_counter() - started)
    if status != 200:
        print(f"   POST /v1/chat/completions -> {status}: {answer}", file=sys.stderr)
        raise SystemExit(1)
    text = answer["choices"][0]["message"]["content"]
    print(f"   POST /v1/chat/completions -> {status} in {elapsed:.0f} ms, {answer['usage']}")
    print(f"     user: {QUESTION}")
    print(f"     {spec.name}: {text.strip()}")
    status, events = call("POST", "/v1/chat/completions", {**body, "stream": True})
    if status != 200 or not isinstance(events, str):
        print(f"   POST /v1/chat/completions (stream) -> {status}: {events}", file=sys.stderr)
        raise SystemExit(1)
    pieces = [json.loads(line[6:]) for line in events.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    streamed = "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p.get("choices"))
    same = "the same text" if streamed == text else "a DIFFERENT text"
    print(f"   POST /v1/chat/completions stream: true -> {status}: {len(pieces)} events ending [DONE], {same}")


def _show_gpu_server(spec) -> None:
    """`modelfn serve` (what a gpu model's container runs) on the exported bundle: /ping until ready,
    then /invocations (texts for an encoder, which the batcher runs; a chat for a generative model,
    which runs on the generator pool), then SIGTERM, which drains and exits."""
    generative = spec.task == "text-generation"
    import signal
    import subprocess

    from infra.emulator import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "infra.cli", "serve", spec.name, "--port", str(port),
                               "--bundle", str(defaults.BUNDLES_DIR / spec.name)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        started, status = time.perf_counter(), None
        while time.perf_counter() - started < 120 and server.poll() is None:
            try:
                with urllib.request.urlopen(base + "/ping", timeout=5) as response:
                    status = response.status
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        if status != 200:
            print(f"   the server did not become ready: {(server.stderr.read() if server.poll() is not None else '')[-400:]}",
                  file=sys.stderr)
            raise SystemExit(1)
        print(f"   GET /ping -> 200 after {time.perf_counter() - started:.1f}s (503 until loaded and warmed)")
        body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "temperature": 0} \
            if generative else {"inputs": SENTENCES}
        request = urllib.request.Request(base + "/invocations", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            answer, status = json.loads(response.read()), response.status
        with urllib.request.urlopen(base + f"/models/{spec.name}", timeout=10) as response:
            provider = json.loads(response.read()).get("provider")
        if generative:
            with urllib.request.urlopen(base + "/health", timeout=10) as response:
                pool = json.loads(response.read())["generation"]
            print(f"   POST /invocations {{\"messages\": [...]}} -> {status} ({provider}, "
                  f"{pool['max_concurrent_generations']} generator at once): "
                  f"{answer['choices'][0]['message']['content']!r}")
        else:
            print(f"   POST /invocations {{\"inputs\": [3 texts]}} -> {status}: {len(answer)} answers, "
                  f"execution provider {provider}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"   SIGTERM -> drained and exited ({server.returncode})")
