"""The read path's failures (functions.fetch) reach registry users as registry errors, chosen by class."""

from __future__ import annotations

import pytest

from functions.errors import (
    DestinationTaken,
    FetchError,
    RegistryUnreachable,
    VersionCorrupt,
    VersionNotFound,
)
from infra.registry import (
    Conflict,
    EndpointError,
    IntegrityError,
    NotInRegistry,
    RegistryError,
)
from infra.registry.errors import from_fetch_error


@pytest.mark.parametrize(("fetched", "reported", "exit_code"), [
    (RegistryUnreachable, EndpointError, 2),
    (VersionNotFound, NotInRegistry, 2),
    (VersionCorrupt, IntegrityError, 1),
    (DestinationTaken, Conflict, 2),
    (FetchError, RegistryError, 2),  # a read failure of no finer class still reaches the user
])
def test_each_fetch_failure_is_reported_as_its_registry_error(fetched, reported, exit_code):
    error = from_fetch_error(fetched("model 'm' version 3: it failed", hint="do this"))
    assert type(error) is reported and error.exit_code == exit_code
    assert str(error) == "model 'm' version 3: it failed (do this)"

