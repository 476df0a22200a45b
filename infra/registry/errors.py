"""Errors of the model registry.

    ModelfnError (functions.errors)
    └── RegistryError            anything the registry refuses or cannot do (exit 2)
        ├── NotFound             unknown model, version or alias
        ├── Conflict             the request contradicts the registry's state (alias points at it, ...)
        ├── EndpointError        S3 unreachable, no credentials, no bucket, access denied
        └── IntegrityError       a stored version is corrupted or partial (exit 1)

The store-level signals below are not user errors: the registry catches them to retry or to
move on to the next version number.
"""

from __future__ import annotations

from functions.errors import ModelfnError
from functions.fetch import FetchError


class RegistryError(ModelfnError):
    """The registry cannot do what was asked."""


class NotFound(RegistryError):
    """An unknown model, version or alias."""


class Conflict(RegistryError):
    """The request contradicts the registry's current state."""


class EndpointError(RegistryError):
    """The storage behind the registry cannot be used as configured."""


class IntegrityError(RegistryError):
    """A stored version does not match its manifest."""

    exit_code = 1


class AlreadyExists(Exception):
    """A create-exclusive write found the key present (S3 412 on If-None-Match)."""


class PreconditionFailed(Exception):
    """A compare-and-swap lost: the key changed or vanished (S3 412 on If-Match, or 409)."""


_BY_KIND = {"endpoint": EndpointError, "not_found": NotFound, "integrity": IntegrityError,
            "destination": Conflict}


def from_fetch_error(exc: FetchError) -> RegistryError:
    """The registry's error for a failure of the shared read path."""
    return _BY_KIND.get(exc.kind, RegistryError)(exc.message, hint=exc.hint)
