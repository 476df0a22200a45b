"""Errors of the model registry.

    ModelfnError (functions.errors)
    └── RegistryError            anything the registry refuses or cannot do (exit 2)
        ├── NotInRegistry        unknown model, version or alias
        ├── Conflict             the request contradicts the registry's state (alias points at it, ...)
        ├── EndpointError        S3 unreachable, no credentials, no bucket, access denied
        └── IntegrityError       a stored version is corrupted or partial (exit 1)

The shared read path (functions.fetch) raises functions.errors.FetchError subclasses; the registry
reports each as its own error by its class (from_fetch_error). The store-level signals below are
not user errors: the registry catches them to retry or to move on to the next version number.
"""

from __future__ import annotations

from functions.errors import (
    DestinationTaken,
    FetchError,
    ModelfnError,
    RegistryUnreachable,
    VersionCorrupt,
    VersionNotFound,
)


class RegistryError(ModelfnError):
    """The registry cannot do what was asked."""


class NotInRegistry(RegistryError):
    """An unknown model, version or alias. (functions.errors.NotFound is the HTTP 404.)"""


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


# The read path's failure classes and the registry error each is reported as.
_FROM_FETCH: tuple[tuple[type[FetchError], type[RegistryError]], ...] = (
    (RegistryUnreachable, EndpointError), (VersionNotFound, NotInRegistry), (VersionCorrupt, IntegrityError),
    (DestinationTaken, Conflict))


def from_fetch_error(exc: FetchError) -> RegistryError:
    """The registry's error for a failure of the shared read path, chosen by its class."""
    reported = next((registry for fetched, registry in _FROM_FETCH if isinstance(exc, fetched)), RegistryError)
    return reported(exc.message, hint=exc.hint)
