"""Project exceptions.

Every exception here subclasses a built-in (convention 11) so callers can catch ``FileNotFoundError`` or ``ValueError``
as usual. Those that also subclass :class:`InputError` mean "bad input, bad usage, or something asked for that this
machine lacks": the CLI prints their message on one line and exits with code 2. Everything else exits with 1.
"""
from __future__ import annotations


class InputError(Exception):
    """Marker: the user can fix this (exit code 2). The message is one line and names the fix."""


class UsageError(InputError, ValueError):
    """A bad option value or combination of options."""


class InputNotFound(InputError, FileNotFoundError):
    """An input file or camera that does not exist."""


class BadInputFile(InputError, ValueError):
    """An input that exists but cannot be read as what it should be (not an image, not a video, corrupt)."""


class OutputError(InputError, OSError):
    """An output location that cannot be written (missing directory, no permission, exists without --overwrite)."""


class ModelNotFound(InputError, FileNotFoundError):
    """A model spec that cannot be resolved (unknown hub id, not cached while offline, missing local path)."""


class LoraError(InputError, ValueError):
    """A LoRA file that is missing, corrupt, or does not fit the model."""


class DeviceUnavailable(InputError, RuntimeError):
    """A device, camera, display or virtual camera that this machine does not have."""


class BackendUnavailable(InputError, ImportError):
    """An engine backend whose extra is not installed or that cannot run on this device."""


def missing_extra(module: str, extra: str) -> BackendUnavailable:
    """The one-line error for an optional dependency that is not installed."""
    return BackendUnavailable(f"{module} is not installed: pip install 'stylecam[{extra}]'")
