"""Why an API answers "not found" for everything: wrong base URL, wrong stage, wrong model name, or no
API deployed there. One line, with the likely cause and the fix.

    diagnose_not_found(client, model=None) -> str | None
    check_endpoints(client, models) -> (lines, problem)   what `modelfn endpoints --check` prints

A modelfn API answers ``GET /health`` with ``{"status": "ok", ...}``, so the base URL is right exactly
when that probe succeeds. When it does not, the probes look for the API next to the URL given: with
the stage added (deployed URLs end in /prod), with extra path segments removed (local servers have
no stage), and with the stage replaced; then the stage root says whether API Gateway knows the
stage at all. Unknown routes answer 404 from modelfn's servers but 403 "Missing Authentication
Token" from API Gateway, and an unknown stage 403 "Forbidden": all three count as "not found" here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from .. import defaults
from .errors import APIError, AuthError, NotFoundError, one_line

if TYPE_CHECKING:
    from .client import Client

PROBE_TIMEOUT_S = 10.0
_GATEWAY_NOT_FOUND = ("missing authentication token", "missing_authentication_token")


class Probe(NamedTuple):
    """One GET: its status (0: no answer) and its JSON body, if any."""

    status: int
    body: object

    @property
    def is_health(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict) and self.body.get("status") == "ok"

    def describe(self) -> str:
        if self.status == 0:
            return "no answer"
        message = ""
        if isinstance(self.body, dict):
            error = self.body.get("error")
            message = (error.get("message") or error.get("code")) if isinstance(error, dict) else \
                self.body.get("message") or self.body.get("Message") or ""
        return f"{self.status} {one_line(message, 80)}".strip()


def is_not_found(error: APIError) -> bool:
    """Whether an API error means "no such route": 404, or API Gateway's 403 for a route or stage it lacks."""
    if isinstance(error, NotFoundError):
        return True
    text = f"{error.code} {error.api_message}".lower()
    return isinstance(error, AuthError) and (any(t in text for t in _GATEWAY_NOT_FOUND) or
                                            error.api_message.strip().lower() == "forbidden")


def probe(client: Client, url: str) -> Probe:
    """GET ``url`` with the client's auth, once (no retries)."""
    try:
        response = client.http.get(url, timeout=min(client.timeout, PROBE_TIMEOUT_S))
    except httpx.HTTPError:
        return Probe(0, None)
    try:
        body = response.json()
    except ValueError:
        body = None
    return Probe(response.status_code, body)


def _with_path(base: str, segments: list[str]) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "".join("/" + s for s in segments), "", ""))


def _candidates(base: str) -> list[tuple[str, str]]:
    """(base URL, what was wrong with the given one) to try, nearest first."""
    segments = [s for s in urlsplit(base).path.split("/") if s]
    stage = defaults.STAGE_NAME
    found: list[tuple[str, str]] = []
    if not segments or segments[-1] != stage:
        found.append((_with_path(base, segments + [stage]), f"the stage /{stage} is missing from the URL"))
    for depth in range(len(segments) - 1, -1, -1):
        parent = segments[:depth]
        extra = "/" + "/".join(segments[depth:])
        local = " (local servers, `modelfn serve` and `sam local start-api`, have no stage)" \
            if extra == "/" + stage else ""
        found.append((_with_path(base, parent), f"the URL has an extra path {extra}{local}"))
        if len(segments) - depth == 1:
            found.append((_with_path(base, parent + [stage]),
                          f"the URL names stage /{segments[depth]}, but the API's stage is /{stage}"))
    seen, unique = {base.rstrip("/")}, []
    for url, cause in found:
        if url not in seen:
            seen.add(url)
            unique.append((url, cause))
    return unique


def diagnose_not_found(client: Client, model: str | None = None) -> str | None:
    """The likely reason ``client``'s API answered "not found", in one line with the fix; None when the
    API and the model are both there (the route itself was wrong, and the error says so already)."""
    base = client.base_url.rstrip("/")
    health = probe(client, base + "/health")
    if health.is_health:
        if model is None:
            return None
        info = probe(client, f"{base}/models/{quote(model, safe='')}")
        if info.status == 200:
            return None
        served = _served_models(client, health)
        listed = f"; it serves {', '.join(repr(m) for m in served)}" if served else ""
        return (f"the API at {base} answers (GET /health is ok) but has no model {model!r}{listed}; "
                "`modelfn endpoints` lists the models and their routes")
    for url, cause in _candidates(base):
        if probe(client, url + "/health").is_health:
            return (f"{base} is not the API's base URL (GET /health answered {health.describe()}): {cause}; "
                    f"use --url {url}")
    root = probe(client, base + "/")
    if root.status == 0 and health.status == 0:
        return f"nothing answers at {base}; is the server running, and the host and port right?"
    if root.status == 403 and "forbidden" in root.describe().lower():
        cause = "API Gateway knows no such stage or API here (it answers 403 Forbidden at the stage root)"
    else:
        cause = f"no modelfn API answers there (GET /health: {health.describe()}; GET /: {root.describe()})"
    return (f"{base} is not a modelfn API: {cause}; is the API deployed (`sam deploy`), or a local server "
            "running at this URL? `modelfn endpoints` prints the deployed ApiUrl")


def _served_models(client: Client, health: Probe) -> list[str]:
    if client.endpoints is not None and client.endpoints.models():
        return client.endpoints.models()
    name = health.body.get("model") if isinstance(health.body, dict) else None
    return [name] if isinstance(name, str) and name else []


def check_endpoints(client: Client, models: list[str]) -> tuple[list[str], str | None]:
    """Probe GET /health and each model's GET /models/{name}: a line per probe, and the diagnosis of
    the first failure (None when all answered)."""
    base = client.base_url.rstrip("/")
    lines, problem = [], None
    health = probe(client, base + "/health")
    lines.append(f"{'ok  ' if health.is_health else 'FAIL'} GET {base}/health -> {health.describe()}")
    if not health.is_health:
        return lines, diagnose_not_found(client) or f"GET /health answered {health.describe()}"
    for name in models:
        info = probe(client, f"{base}/models/{quote(name, safe='')}")
        ok = info.status == 200
        lines.append(f"{'ok  ' if ok else 'FAIL'} GET {base}/models/{name} -> {info.describe()}")
        if not ok and problem is None:
            problem = diagnose_not_found(client, name) or f"GET /models/{name} answered {info.describe()}"
    return lines, problem


__all__ = ["Probe", "check_endpoints", "diagnose_not_found", "is_not_found", "probe"]
