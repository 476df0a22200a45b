"""Errors of calling a modelfn API, rooted in functions.errors.ModelfnError so the CLI renders them
as one line like every other error.

    ModelfnError
    └── ClientError              a call to a modelfn API did not get an answer it can use (exit 1)
        ├── CredentialsError     the API wants SigV4 and no AWS credentials were found (exit 2)
        ├── StackError           the CloudFormation stack or its outputs cannot be read (exit 2)
        ├── UnreachableError     nothing answered at the URL (refused, unknown host, TLS)
        ├── CallTimeoutError     no answer within the timeout
        └── APIError             the API answered an error: ``status``, ``code``, ``message``
            ├── BadRequestError  400, 413, 415, 422: the request was wrong
            ├── AuthError        401, 403: missing, wrong or unauthorized credentials
            ├── NotFoundError    404: unknown model or route
            ├── ThrottledError   429, still throttled after the retries
            └── ServerError      5xx (502/503/504 after the retries)
"""

from __future__ import annotations

from functions.errors import ModelfnError


def one_line(text: object, limit: int = 300) -> str:
    """Whitespace collapsed and cut, so a message from the wire never breaks the one-line rule."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ClientError(ModelfnError):
    """A call to a modelfn API failed."""

    exit_code = 1


class CredentialsError(ClientError):
    """The API uses IAM auth and the AWS credential chain found nothing to sign with."""

    exit_code = 2


class StackError(ClientError):
    """The CloudFormation stack is missing, unreadable, or lacks the outputs modelfn writes."""

    exit_code = 2


class UnreachableError(ClientError):
    """Nothing answered: connection refused, unknown host, TLS failure."""


class CallTimeoutError(ClientError):
    """The API did not answer within the timeout."""


class APIError(ClientError):
    """The API answered with an error status; ``code`` and ``message`` are the API's own
    (``{"error": {"code", "message"}}``), ``status`` the HTTP status."""

    def __init__(self, status: int, code: str, message: str, *, method: str = "", url: str = "",
                 attempts: int = 1, retry_after: float | None = None, hint: str | None = None):
        self.status, self.code, self.api_message = status, code, one_line(message)
        self.method, self.url, self.attempts, self.retry_after = method, url, attempts, retry_after
        where = f" from {method} {url}" if url else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{status} {code}{where}{tries}: {self.api_message}", hint=hint)


class BadRequestError(APIError):
    """400, 413, 415 or 422."""


class AuthError(APIError):
    """401 or 403."""


class NotFoundError(APIError):
    """404."""


class ThrottledError(APIError):
    """429 after every retry."""


class ServerError(APIError):
    """5xx."""


def error_fields(data: dict) -> tuple[str, str]:
    """(code, message) of an error body: modelfn's and API Gateway's ``{"error": {"code", "message"}}``,
    OpenAI's ``{"error": {"type", "message"}}``, API Gateway's bare ``{"message"}``; empty when none."""
    error = data.get("error", data)
    if isinstance(error, str):
        return "", error
    if not isinstance(error, dict):
        return "", ""
    code = error.get("code") or error.get("type") or ""
    message = error.get("message") or error.get("Message") or ""
    return str(code), str(message)


def api_error_class(status: int) -> type[APIError]:
    """The APIError subclass for an HTTP status."""
    if status == 429:
        return ThrottledError
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIError


__all__ = ["ClientError", "CredentialsError", "StackError", "UnreachableError", "CallTimeoutError", "APIError",
           "BadRequestError", "AuthError", "NotFoundError", "ThrottledError", "ServerError", "api_error_class",
           "error_fields", "one_line"]
