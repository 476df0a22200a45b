"""The model registry: ``s3://bucket/prefix`` or a local directory, same semantics on both.

Versions are numbered, immutable and visible only once complete; aliases move by compare-and-swap
and keep an append-only history; every pull checks every file's sha256. See registry.py for the
layout and versions.py / aliases.py for why concurrent writers cannot corrupt it.
"""

from .errors import Conflict, EndpointError, IntegrityError, NotInRegistry, RegistryError
from .records import AliasState, HistoryEntry, PushResult, VerifyResult, VersionInfo
from .registry import Registry, open_registry

__all__ = [
    "AliasState", "Conflict", "EndpointError", "HistoryEntry", "IntegrityError", "NotInRegistry", "PushResult",
    "Registry", "RegistryError", "VerifyResult", "VersionInfo", "open_registry",
]
