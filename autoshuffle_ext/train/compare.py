"""The comparison table of several shuffle variants trained on the same seed and data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .loop import RunResult
from .metrics import atomic_write_text

__all__ = ["comparison_rows", "format_table", "write_comparison"]

_COLUMNS = (
    "shuffle",
    "soft acc",
    "frozen acc",
    "params",
    "shuffle params",
    "MFLOPs",
    "s/epoch",
    "final P(M)",
    "moved vs fixed",
)


def _moved(result: RunResult) -> tuple[int, int] | None:
    """(channels whose rounded source differs from the fixed shuffle's, channels), summed over
    the soft shuffles; None without any."""
    rows = [r for r in result.layers if r["moved"] is not None]
    if not rows:
        return None
    return sum(r["moved"] for r in rows), sum(r["channels"] for r in rows)


def comparison_rows(results: Sequence[RunResult]) -> list[dict]:
    """One plain dict per variant (the JSON form of the table)."""
    return [
        {
            "shuffle": r.shuffle,
            "soft_acc": r.soft_acc,
            "frozen_acc": r.frozen_acc,
            "params": r.params,
            "shuffle_params": r.shuffle_params,
            "macs": r.macs,
            "shuffle_macs": r.shuffle_macs,
            "time_per_epoch": r.time_per_epoch,
            "final_penalty": r.final_penalty,
            "final_distance": r.final_distance,
            "moved": None if _moved(r) is None else _moved(r)[0],
            "epochs": r.epochs,
        }
        for r in results
    ]


def format_table(results: Sequence[RunResult]) -> str:
    """A Markdown table: accuracy before and after rounding, size, cost, time, final penalty.

    MFLOPs are inference multiply-adds, equal for every variant once the learned shuffles are
    frozen into gathers; `shuffle params` are the extra C x C matrices trained."""
    lines = [
        "| " + " | ".join(_COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in _COLUMNS[1:]) + " |",
    ]
    for r in results:
        penalty = "-" if r.final_penalty is None else f"{r.final_penalty:.3g}"
        moved = _moved(r)
        cells = [
            r.shuffle,
            f"{r.soft_acc:.4f}",
            f"{r.frozen_acc:.4f}",
            f"{r.params:,}",
            f"{r.shuffle_params:,}",
            f"{r.macs / 1e6:.2f}",
            f"{r.time_per_epoch:.2f}",
            penalty,
            "-" if moved is None else f"{moved[0]}/{moved[1]}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison(out_dir: Path, results: Sequence[RunResult], heading: str) -> str:
    """Writes `comparison.md` and `comparison.json` in `out_dir`; returns the table."""
    table = format_table(results)
    atomic_write_text(out_dir / "comparison.md", f"# {heading}\n\n{table}\n")
    rows = comparison_rows(results)
    atomic_write_text(out_dir / "comparison.json", json.dumps(rows, indent=2) + "\n")
    return table
