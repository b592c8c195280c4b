"""Exceptions of the ``engines`` package.

``engines`` imports nothing from ``realtime``, so it has its own exception classes. Each subclasses a built-in
(convention 11). How the CLI should map them to exit codes (docs/design.md §7):

=========================  =========  ==============================================================================
exception                  exit code  meaning
=========================  =========  ==============================================================================
``BackendUnavailable``     2          a backend whose extra is not installed, or that cannot run on this device
``EngineOptionError``      2          a bad option value, an unknown backend name, inputs that do not fit the engine
``CacheDirError``          2          a cache directory that cannot be created or written
``EngineBuildError``       1          an export or engine build that failed (the message names the stage)
``EngineRunError``         1          an engine that failed while running
``RefitUnsupported``       --         not an error for the user: the caller rebuilds the engine instead of refitting
=========================  =========  ==============================================================================
"""
from __future__ import annotations


class BackendUnavailable(ImportError):
    """A backend that cannot be used here. The message is one line and names the fix (usually a pip extra)."""


class EngineOptionError(ValueError):
    """A bad engine option or argument. The message names the field, the value and what is allowed."""


class CacheDirError(OSError):
    """The engine cache directory cannot be created or written."""


class EngineBuildError(RuntimeError):
    """Exporting, compiling or building an engine failed."""


class EngineRunError(RuntimeError):
    """An engine failed while running."""


class EngineCorrupt(RuntimeError):
    """A cached engine artifact that cannot be loaded (corrupt file, other library version). Rebuild it."""


class RefitUnsupported(RuntimeError):
    """The requested weight change cannot be applied to this engine in place: rebuild it instead."""


def missing_extra(what: str, extra: str) -> BackendUnavailable:
    """The one-line error for an optional dependency that is not installed."""
    return BackendUnavailable(f"{what} is not installed: pip install 'stylecam[{extra}]'")
