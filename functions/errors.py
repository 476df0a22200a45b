"""Errors of modelfn, rooted in one class so callers can catch them in one place.

    ModelfnError                 anything a user can fix; rendered as one line
    ├── ConfigError              models.yaml or a command-line setting is wrong (exit 2)
    ├── UnknownTaskError         a task name modelfn does not serve (exit 2)
    ├── BundleError              a model bundle is missing, incomplete or corrupted (exit 2)
    │   └── FetchError           a registry version could not be fetched (functions/fetch.py)
    │       ├── RegistryUnreachable  no endpoint, credentials or bucket, or access denied
    │       ├── VersionNotFound      the registry has no such version
    │       ├── VersionCorrupt       a stored file is missing, partial or corrupted
    │       └── DestinationTaken     the local destination holds something else
    └── RequestError             an HTTP caller sent something wrong (status 4xx)
        ├── BadRequest           400
        ├── NotFound             404
        ├── MethodNotAllowed     405
        ├── PayloadTooLarge      413
        ├── UnsupportedMediaType 415
        ├── Unprocessable        422
        ├── TooManyRequests      429 (the GPU server's queue is full; Retry-After)
        ├── NotReady             503 (the GPU server is still loading its model; Retry-After)
        └── TimedOut             504 (the request would run past its time budget: functions/deadline.py)

export/ and infra/ add their own subclasses (ExportError, RegistryError, ...); the registry reports
the fetch errors as its own by their class (infra/registry/errors.py). The CLI maps
``exit_code`` to the process status and the HTTP layer maps ``status`` to the response, each in
exactly one place.
"""

from __future__ import annotations


class ModelfnError(Exception):
    """Root of every error a user can act on. ``str(err)`` is the one line they see."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ModelfnError):
    """models.yaml or a setting is invalid."""


class UnknownTaskError(ConfigError):
    """A task name that is not among the supported ones."""


class BundleError(ModelfnError):
    """A model bundle cannot be used: missing file, bad manifest, digest mismatch."""


class FetchError(BundleError):
    """A registry version could not be fetched (functions.fetch, the one read path of bundle files)."""


class RegistryUnreachable(FetchError):
    """The registry's storage cannot be used: unreachable, no credentials, no bucket, access denied."""


class VersionNotFound(FetchError):
    """The registry has no such version (or object)."""


class VersionCorrupt(FetchError):
    """A stored version is partial or does not match its manifest."""


class DestinationTaken(FetchError):
    """The local destination already holds something other than the version asked for."""


class RequestError(ModelfnError):
    """Something the HTTP caller got wrong. ``status`` and ``code`` go into the response."""

    status = 400
    code = "bad_request"
    # Seconds after which a retry may succeed, sent as Retry-After (429/503); None: no header.
    retry_after: int | None = None


class BadRequest(RequestError):
    status, code = 400, "bad_request"


class NotFound(RequestError):
    status, code = 404, "not_found"


class MethodNotAllowed(RequestError):
    status, code = 405, "method_not_allowed"


class PayloadTooLarge(RequestError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(RequestError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(RequestError):
    status, code = 422, "unprocessable_entity"


class TooManyRequests(RequestError):
    """More requests in flight than the server admits; the caller should retry after ``retry_after`` s."""

    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class NotReady(RequestError):
    """The server is up but its model is not loaded and warmed yet (the one 5xx a RequestError carries:
    nothing is wrong with the request, and a retry after ``retry_after`` s may succeed)."""

    status, code = 503, "not_ready"

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class TimedOut(RequestError):
    """The request would run past its time budget (the function's remaining time or
    $MODELFN_TIME_BUDGET_MS): answered as a clear 504 before Lambda would kill the function mid-answer."""

    status, code = 504, "timeout"
