"""The comparison of several shuffle variants trained on the same data: one row per run, and
over several seeds the mean and spread per variant with the paired difference to the fixed
shuffle, and a plot of accuracy with one point per seed."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from .errors import naming_file
from .metrics import atomic_write_text, strict_json
from .report import pyplot
from .result import RunResult

__all__ = [
    "comparison_rows",
    "format_seed_table",
    "format_table",
    "plot_seeds",
    "seed_summary",
    "write_comparison",
]

_COLUMNS = (
    "variant",
    "seed",
    "soft acc",
    "frozen acc",
    "params",
    "shuffle params",
    "MFLOPs",
    "s/epoch",
    "final P(M)",
    "moved vs fixed",
)
_SEED_COLUMNS = (
    "variant",
    "seeds",
    "soft acc",
    "frozen acc",
    "frozen - fixed (points, paired)",
    "moved vs fixed",
    "final P(M)",
    "s/epoch",
)


def _moved(result: RunResult) -> tuple[int, int] | None:
    """(channels whose rounded source differs from the fixed shuffle's, channels), summed over
    the soft shuffles; None without any."""
    rows = [r for r in result.layers if r.get("moved") is not None]
    if not rows:
        return None
    return sum(r["moved"] for r in rows), sum(r["channels"] for r in rows)


def comparison_rows(results: Sequence[RunResult]) -> list[dict]:
    """One plain dict per run (the JSON form of the table)."""
    return [
        {
            "variant": r.variant,
            "seed": r.seed,
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


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(columns: Sequence[str]) -> list[str]:
    return [_row(columns), "| --- | " + " | ".join("---:" for _ in columns[1:]) + " |"]


def format_table(results: Sequence[RunResult]) -> str:
    """A Markdown table, one row per run: accuracy before and after rounding, size, cost, time,
    final penalty.

    MFLOPs are inference multiply-adds, equal for every variant once the learned shuffles are
    frozen into gathers; `shuffle params` are the extra C x C matrices trained."""
    lines = _header(_COLUMNS)
    for r in results:
        penalty = "-" if r.final_penalty is None else f"{r.final_penalty:.3g}"
        moved = _moved(r)
        cells = [
            r.variant,
            str(r.seed),
            f"{r.soft_acc:.4f}",
            f"{r.frozen_acc:.4f}",
            f"{r.params:,}",
            f"{r.shuffle_params:,}",
            f"{r.macs / 1e6:.2f}",
            f"{r.time_per_epoch:.2f}",
            penalty,
            "-" if moved is None else f"{moved[0]}/{moved[1]}",
        ]
        lines.append(_row(cells))
    return "\n".join(lines)


def _mean_std(values: Sequence[float]) -> dict | None:
    """Mean and sample standard deviation (0 for one value); None for no values."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def seed_summary(results: Sequence[RunResult]) -> list[dict]:
    """Per variant (in order of first appearance): its seeds, mean and sample standard deviation
    of soft and frozen accuracy, channels moved, final P(M) and seconds per epoch, and the
    per-seed difference of frozen accuracy to the fixed shuffle (on the seeds both have run),
    in points, with its mean and spread. Fields without values are None."""
    by_kind: dict[str, dict[int, RunResult]] = {}
    for r in results:
        by_kind.setdefault(r.variant, {})[r.seed] = r
    fixed = by_kind.get("fixed", {})
    rows = []
    for kind, runs in by_kind.items():
        seeds = sorted(runs)
        ordered = [runs[s] for s in seeds]
        moved = [m[0] for m in map(_moved, ordered) if m is not None]
        penalties = [r.final_penalty for r in ordered if r.final_penalty is not None]
        paired = {
            s: 100.0 * (runs[s].frozen_acc - fixed[s].frozen_acc)
            for s in seeds
            if s in fixed and kind != "fixed"
        }
        rows.append(
            {
                "variant": kind,
                "seeds": seeds,
                "soft_acc": _mean_std([r.soft_acc for r in ordered]),
                "frozen_acc": _mean_std([r.frozen_acc for r in ordered]),
                "frozen_acc_per_seed": [r.frozen_acc for r in ordered],
                "minus_fixed_points": _mean_std(list(paired.values())),
                "minus_fixed_per_seed": paired or None,
                "moved": _mean_std(moved),
                "channels": None if _moved(ordered[0]) is None else _moved(ordered[0])[1],
                "final_penalty": _mean_std(penalties),
                "time_per_epoch": _mean_std([r.time_per_epoch for r in ordered]),
            }
        )
    return rows


def _pm(stat: dict | None, spec: str) -> str:
    return "-" if stat is None else f"{stat['mean']:{spec}} ± {stat['std']:{spec}}"


def format_seed_table(rows: Sequence[dict]) -> str:
    """The Markdown table of `seed_summary`: mean ± sample standard deviation over the seeds."""
    lines = _header(_SEED_COLUMNS)
    for row in rows:
        moved = _pm(row["moved"], ".0f")
        if row["moved"] is not None:
            moved += f" / {row['channels']}"
        diff = row["minus_fixed_points"]
        if diff is not None:
            per_seed = ", ".join(f"{v:+.2f}" for v in row["minus_fixed_per_seed"].values())
            diff_cell = f"{diff['mean']:+.2f} ± {diff['std']:.2f} ({per_seed})"
        else:
            diff_cell = "-"
        cells = [
            row["variant"],
            ",".join(map(str, row["seeds"])),
            _pm(row["soft_acc"], ".4f"),
            _pm(row["frozen_acc"], ".4f"),
            diff_cell,
            moved,
            _pm(row["final_penalty"], ".3g"),
            _pm(row["time_per_epoch"], ".1f"),
        ]
        lines.append(_row(cells))
    return "\n".join(lines)


def plot_seeds(rows: Sequence[dict], path: Path, title: str) -> None:
    """Frozen accuracy per variant: one point per seed and a bar at the mean."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.4))
    for x, row in enumerate(rows):
        accs = row["frozen_acc_per_seed"]
        ax.scatter([x] * len(accs), accs, color="tab:blue", zorder=3)
        ax.hlines(row["frozen_acc"]["mean"], x - 0.25, x + 0.25, color="black")
    ax.set_xticks(range(len(rows)), [row["variant"] for row in rows])
    ax.set(ylabel="frozen accuracy (validation)", title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with naming_file(path):
        fig.savefig(path, dpi=100)
    plt.close(fig)


def write_comparison(out_dir: Path, results: Sequence[RunResult], heading: str) -> str:
    """Writes `comparison.md` and `comparison.json` in `out_dir` (with several seeds also the
    per-variant summary and `comparison.png`); returns the Markdown printed to the user."""
    table = format_table(results)
    record: dict = {"runs": comparison_rows(results)}
    text = table
    if len({r.seed for r in results}) > 1:
        rows = seed_summary(results)
        record["summary"] = rows
        text = f"{table}\n\nOver seeds (mean ± sample std):\n\n{format_seed_table(rows)}"
        plot_seeds(rows, out_dir / "comparison.png", heading)
    figure = "\n![frozen accuracy per seed](comparison.png)\n" if "summary" in record else ""
    atomic_write_text(out_dir / "comparison.md", f"# {heading}\n\n{text}\n{figure}")
    atomic_write_text(out_dir / "comparison.json", strict_json(record))
    return text
