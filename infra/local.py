"""Local runs of the generated SAM application: container engine checks, `sam build`, and a
`sam local start-api` server that starts, waits for /health, and stops cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


from .emulator import free_port
from .errors import LocalRunError

AWS_BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"



def sam_binary() -> str | None:
    """The SAM CLI beside this interpreter (the project's venv), else on PATH."""
    return shutil.which("sam", path=str(Path(sys.executable).parent)) or shutil.which("sam")


def sam_env() -> dict[str, str]:
    return {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "SAM_CLI_TELEMETRY": "0"}


def container_engine_problem(base_image: str = AWS_BASE_IMAGE, *, need_sam: bool = True) -> str | None:
    """None when sam (unless not ``need_sam``), a Docker-API engine and the base image are usable;
    else why not, in one line."""
    if need_sam and not sam_binary():
        return "the SAM CLI (`sam`) is not installed"
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return "no container engine: DOCKER_HOST is unset and /var/run/docker.sock is absent"
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
        return f"the container engine at {os.environ.get('DOCKER_HOST', '/var/run/docker.sock')} is not answering ({exc.__class__.__name__})"
    try:
        client.images.get(base_image)
    except Exception:  # noqa: BLE001
        return f"the base image {base_image} is not present (scripts/standin-base/build.sh builds a stand-in)"
    return None


def image_python(base_image: str = AWS_BASE_IMAGE) -> str:
    """The Python version inside the base image: 3.12 for the AWS base, 3.11 for the Debian stand-in."""
    import docker

    out = docker.from_env(timeout=120).containers.run(
        base_image, entrypoint="python3", remove=True,
        command=["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.decode().strip()


def sam(cwd: str | os.PathLike[str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `sam ARGS` in cwd; raises LocalRunError with the tail of its output on failure."""
    binary = sam_binary()
    if not binary:
        raise LocalRunError("the SAM CLI (`sam`) is not installed", hint="pip install 'modelfn[dev]'")
    proc = subprocess.run([binary, *args], cwd=cwd, env=sam_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + proc.stderr[-1500:]).strip().splitlines()
        raise LocalRunError(f"`sam {' '.join(args)}` failed: {tail[-1] if tail else 'no output'}")
    return proc


class StartApi:
    """`with StartApi(project_dir) as api: httpx.post(api.url + "/models/...")` runs `sam local start-api`."""

    def __init__(self, cwd: str | os.PathLike[str], *, port: int | None = None, startup_timeout_s: float = 180):
        self.cwd = Path(cwd)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.cwd / "start-api.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "StartApi":
        binary = sam_binary()
        if not binary:
            raise LocalRunError("the SAM CLI (`sam`) is not installed")
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [binary, "local", "start-api", "--port", str(self.port), "--warm-containers", "EAGER"],
            cwd=self.cwd, env=sam_env(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                self._close()
                raise LocalRunError(f"`sam local start-api` exited with status {self.process.returncode}",
                                    hint=f"see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=10) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise LocalRunError(f"`sam local start-api` did not answer /health within {self.startup_timeout_s:.0f} s",
                                    hint=f"see {self.log_path}")
            time.sleep(1)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            # SIGINT is sam's Ctrl-C: it stops and removes its warm containers before exiting.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        log = getattr(self, "_log", None)
        if log and not log.closed:
            log.close()
