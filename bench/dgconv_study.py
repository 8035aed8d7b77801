"""The learned-groups study of bench/RESULTS.md: fixed groups against learned ones at a matched
budget, from the runs' `result.json` files.

    python bench/dgconv_study.py runs/dg/fixed/seed0/fixed/result.json \\
        runs/dg/learned/seed0/learned/result.json --plot bench/dgconv_groups.png

prints a Markdown table (accuracy, inference params and multiply-adds, their ratio to the first
run's, the pointwise cost as a fraction of dense pointwise convs), the mean and standard deviation
over the seeds of each kind of run, and plots the group count of
every pointwise conv of each run, the fixed model's (the learned runs' start) included.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from autoshuffle_ext.models import build_model
from autoshuffle_ext.modules import GroupsConfig


def start_groups(config: dict) -> tuple[list[int], float]:
    """The fixed model's group counts, which the learned one starts from, and their cost."""
    model = build_model(config["model"], 10, config["stem"], [GroupsConfig(budget=1.0)])
    report = model.group_budget.report()
    return report["groups"], report["cost"]


def describe(record: dict) -> dict:
    rows = [r for r in record["layers"] if r["kind"] == "GroupBudget"]
    groups, cost = (rows[0]["groups"], rows[0]["cost"]) if rows else start_groups(record["config"])
    config = record["config"]
    label = f"{config['groups']} groups, {record['shuffle']} shuffle"
    if config["groups"] == "learned":
        gate_lr = config.get("gate_lr") or config["lr"]
        label += f" (gate init {config.get('gate_init', 1.0)}, gate lr {gate_lr})"
    return {"label": label, "seed": record["seed"], "groups": groups, "cost": cost, **record}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="result.json files; the first is the base")
    p.add_argument("--plot", type=Path, default=None, help="where to save the group-count plot")
    args = p.parse_args()
    runs = [describe(json.loads(path.read_text())) for path in args.results]
    base = runs[0]
    print("| run | seed | frozen acc | params | MFLOPs | params / base | MACs / base | "
          "pointwise cost / dense |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        print(
            f"| {run['label']} | {run['seed']} | {run['frozen_acc']:.4f} | {run['params']:,} | "
            f"{run['macs'] / 1e6:.2f} | {run['params'] / base['params']:.3f} | "
            f"{run['macs'] / base['macs']:.3f} | {run['cost']:.4f} |"
        )
    labels = dict.fromkeys(run["label"] for run in runs)
    print("\n| run | seeds | frozen acc, mean | std | params, mean | MFLOPs, mean |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label in labels:
        same = [run for run in runs if run["label"] == label]
        accs = [run["frozen_acc"] for run in same]
        std = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        print(
            f"| {label} | {len(same)} | {statistics.mean(accs):.4f} | {std:.4f} | "
            f"{statistics.mean(run['params'] for run in same):,.0f} | "
            f"{statistics.mean(run['macs'] for run in same) / 1e6:.2f} |"
        )
    if args.plot is not None:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for run in runs:
            ax.step(range(len(run["groups"])), run["groups"], where="mid",
                    label=f"{run['label']} (seed {run['seed']})")  # fmt: skip
        ax.set_yscale("log", base=2)
        ax.set_xlabel("pointwise conv (compress, expand of each unit, in order)")
        ax.set_ylabel("groups G")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
