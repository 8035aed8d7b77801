"""Loads the compiled library `autoshuffle_ext._C`.

Importing `_C` runs its `TORCH_LIBRARY` registrations, which define `torch.ops.autoshuffle_ext.*`.
Without it (a source checkout that was never built) the op modules register ATen fallbacks of the
same schemas, so every layer above runs unchanged, only slower; a warning says so once.
"""

from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libtorch / libc10, which _C links against, first)

__all__ = ["extension_available", "load_error"]

try:
    from . import _C  # noqa: F401  (registers the ops)

    _LOAD_ERROR: str | None = None
except ImportError as exc:
    _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"autoshuffle_ext: the compiled library could not be loaded ({_LOAD_ERROR}); using the "
        "slower ATen fallback. Build it with `pip install -e . --no-build-isolation`.",
        RuntimeWarning,
        stacklevel=2,
    )


def extension_available() -> bool:
    """True when the compiled library `autoshuffle_ext._C` is loaded and serves the ops."""
    return _LOAD_ERROR is None


def load_error() -> str | None:
    """Why the compiled library could not be loaded, or None when it is loaded."""
    return _LOAD_ERROR
