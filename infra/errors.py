"""Errors of the build-time and local-run tools, each one line a user can act on.

    ModelfnError (functions.errors)
    ├── RegistryError (infra.registry.errors)  the model registry refused or failed
    └── ToolError                              a tool modelfn drives failed (exit 2)
        ├── WheelhouseError                    the image's wheels could not be downloaded
        ├── LocalRunError                      sam or the container engine failed
        └── EmulatorError                      the Lambda Runtime Interface Emulator failed

The CLI renders all of them in one place (infra/cli/__init__.py).
"""

from __future__ import annotations

from functions.errors import ModelfnError


class ToolError(ModelfnError):
    """A tool modelfn drives (pip, sam, podman, the emulator) failed."""


class WheelhouseError(ToolError):
    """The wheels for the image could not be downloaded."""


class LocalRunError(ToolError):
    """sam or the container engine failed."""


class EmulatorError(ToolError):
    """The emulator could not be found, started or invoked."""


__all__ = ["ToolError", "WheelhouseError", "LocalRunError", "EmulatorError"]
