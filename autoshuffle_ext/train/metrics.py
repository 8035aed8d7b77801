"""Per-epoch metrics, rewritten whole after each epoch as CSV and JSON (atomically)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from .errors import naming_file

__all__ = ["atomic_write_text", "strict_json", "write_metrics"]


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def strict_json(obj) -> str:
    """`obj` as strict JSON (indented): NaN and infinities become null, never bare tokens."""
    return json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with naming_file(path):
        tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics(out_dir: str | Path, history: list[dict]) -> None:
    """`metrics.csv` and `metrics.json` in `out_dir`, one row per epoch."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "metrics.json", strict_json(history))
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    atomic_write_text(out_dir / "metrics.csv", buffer.getvalue())
