"""Checkpoints: written atomically, read back with a check that they belong to this run.

A checkpoint is replaced only by a complete newer file (write to a temporary name in the same
folder, flush to disk, `os.replace`), so a crash or a kill mid-write leaves the previous one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, naming_file

__all__ = ["FORMAT", "atomic_save", "capture_rng", "load_checkpoint", "restore_rng"]

# 2: the run's structures are a list of configs (`TrainConfig.structures`), not flat fields.
FORMAT = "autoshuffle_ext.train/2"


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save(obj, path)` that never leaves a partial file at `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with naming_file(path), tmp.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def capture_rng() -> dict:
    """The global RNG states of python, numpy and torch (CPU, and CUDA where present)."""
    state = {
        "python": random.getstate(),
        # The legacy global numpy RNG is what third-party code draws from: saved, not used.
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of `capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, identity: dict) -> dict:
    """Reads a checkpoint and checks it was written by a run with the same `identity`
    (model, shuffle, dataset, stem, image size, classes).

    Raises:
        CheckpointError: unreadable file, not a checkpoint of this program, or written for
            another configuration (the message lists the fields that differ).
    """
    path = Path(path)
    try:
        # Our own files hold numpy RNG state and plain containers: weights_only=False is needed
        # for the numpy state and is safe for checkpoints this program wrote.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many types for a bad file
        raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith("autoshuffle_ext.train/") and found != FORMAT:
        raise CheckpointError(
            f"{path}: a checkpoint of an earlier autoshuffle-train (format {found}, now "
            f"{FORMAT}) that this version cannot resume; choose another --out"
        )
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of autoshuffle-train ({FORMAT})")
    saved = state.get("identity", {})
    diffs = [
        f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
        for key, value in identity.items()
        if saved.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"{path}: checkpoint belongs to another configuration ({'; '.join(diffs)}); "
            "resume with the same flags or choose another --out"
        )
    return state
