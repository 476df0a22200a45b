"""Run a model's function under the real Lambda Runtime Interface Emulator, without a container.

For machines with no container engine: the same `aws-lambda-rie` binary that the AWS base images
(and `sam local`) use, shipped inside the aws-sam-cli wheel, runs `python -m awslambdaric
functions.handler.handler` on the host and is invoked over its HTTP API with API Gateway events.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from functions import constants
from .errors import EmulatorError

HANDLER = "functions.handler.handler"
_INVOKE_PATH = "/2015-03-31/functions/function/invocations"



def rie_binary() -> Path:
    """The Runtime Interface Emulator binary that ships inside the aws-sam-cli wheel."""
    try:
        import samcli
    except ImportError:
        raise EmulatorError("aws-sam-cli is not installed", hint="pip install 'modelfn[dev]'") from None
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    path = Path(samcli.__file__).parent / "local" / "rapid" / f"aws-lambda-rie-{arch}"
    if not path.is_file():
        raise EmulatorError(f"the Runtime Interface Emulator is missing at {path}", hint="reinstall aws-sam-cli")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_event(method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
              raw_body: bytes | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) proxy event, as API Gateway sends it to the function."""
    headers = {"content-type": "application/json", **(headers or {})}
    encoded = False
    if raw_body is not None:
        text, encoded = base64.b64encode(raw_body).decode("ascii"), True
    elif body is not None:
        text = body if isinstance(body, str) else json.dumps(body)
    else:
        text = None
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "local", "domainName": "localhost",
            "domainPrefix": "localhost", "requestId": f"modelfn-{int(now * 1e6)}",
            "routeKey": "$default", "stage": "$default", "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "modelfn"},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class Emulator:
    """`with Emulator(bundle_dir) as emu: emu.invoke(api_event(...))` runs the function under the RIE."""

    def __init__(self, bundle_dir: str | os.PathLike[str], *, env: dict[str, str] | None = None,
                 port: int | None = None, cwd: str | os.PathLike[str] | None = None, startup_timeout_s: float = 60):
        self.bundle_dir = Path(bundle_dir).resolve()
        self.env = env or {}
        self.port = port or free_port()
        self.cwd = Path(cwd or Path(__file__).resolve().parent.parent)
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        env = {
            **os.environ,
            constants.BUNDLE_DIR: str(self.bundle_dir),
            constants.LAMBDA_TASK_ROOT: str(self.cwd),
            "PYTHONPATH": str(self.cwd),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "60",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
            "LOG_LEVEL": "error",
            **self.env,
        }
        env.pop("AWS_LAMBDA_RUNTIME_API", None)
        cmd = [str(rie_binary()), "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
               sys.executable, "-m", "awslambdaric", HANDLER]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"modelfn-rie-{self.port}.log"
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmulatorError(f"the emulator exited with status {self.process.returncode}",
                                    hint=f"see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"the emulator did not listen on port {self.port} within {self.startup_timeout_s:.0f} s")

    def invoke(self, event: dict[str, Any], *, timeout_s: float = 120) -> dict[str, Any]:
        """Invoke the function with an event; returns the Lambda response (statusCode, headers, body)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{_INVOKE_PATH}", data=json.dumps(event).encode(), method="POST",
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise EmulatorError(f"invoking the emulator failed: {exc}", hint=f"see {self.log_path}") from None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
