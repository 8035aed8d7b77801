"""The end-of-run report: Markdown with training curves and permutation heatmaps (PNG)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import modules as asx_modules
from ..ops import fixed_shuffle_perm
from .config import TrainConfig
from .errors import naming_file
from .metrics import atomic_write_text
from .result import RunResult

__all__ = ["plot_curves", "plot_permutations", "pyplot", "write_run_report"]

_MAX_HEATMAPS = 4


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss, accuracy and (if any) penalty per epoch, side by side."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    has_penalty = any(row.get("penalty") is not None for row in history)
    fig, axes = plt.subplots(1, 3 if has_penalty else 2, figsize=(12 if has_penalty else 8, 3.2))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="val")
    axes[0].set(xlabel="epoch", ylabel="task loss", title="loss")
    axes[1].plot(epochs, [r["train_acc"] for r in history], label="train")
    axes[1].plot(epochs, [r["val_acc"] for r in history], label="val")
    if all(r.get("val_certified_acc") is not None for r in history):
        certified = [r["val_certified_acc"] for r in history]
        axes[1].plot(epochs, certified, label="val certified")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in axes[:2]:
        ax.legend()
    if has_penalty:
        axes[2].semilogy(epochs, [max(r["penalty"], 1e-12) for r in history], label="P(M)")
        if all(r.get("distance") is not None for r in history):
            distances = [max(r["distance"], 1e-12) for r in history]
            axes[2].semilogy(epochs, distances, label="distance")
        axes[2].set(xlabel="epoch", title="sum over learned structures")
        axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with naming_file(path):
        fig.savefig(path, dpi=100)
    plt.close(fig)


def _soft_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor, int | None]]:
    with torch.no_grad():
        return [
            (name, module.matrix().detach().cpu(), module.groups)
            for name, module in asx_modules.structures(model, asx_modules.SoftShuffle)
        ]


def plot_permutations(model: nn.Module, path: Path, title: str) -> bool:
    """Heatmaps of a few learned mixing matrices, each beside the fixed shuffle it replaced.
    Returns False (and writes nothing) when the model has no soft shuffle."""
    found = _soft_matrices(model)
    if not found:
        return False
    step = max(1, len(found) // _MAX_HEATMAPS)
    chosen = found[::step][:_MAX_HEATMAPS]
    plt = pyplot()
    fig, axes = plt.subplots(len(chosen), 2, figsize=(7, 3.3 * len(chosen)), squeeze=False)
    for (name, matrix, groups), (left, right) in zip(chosen, axes, strict=True):
        n = matrix.shape[0]
        left.imshow(matrix.numpy(), cmap="magma", interpolation="nearest", vmin=0, vmax=1)
        left.set_title(f"learned M: {name} ({n}x{n})", fontsize=8)
        if groups is not None:
            fixed = torch.zeros(n, n)
            fixed[torch.arange(n), fixed_shuffle_perm(n, groups)] = 1
            right.imshow(fixed.numpy(), cmap="magma", interpolation="nearest", vmin=0, vmax=1)
            right.set_title(f"fixed shuffle, {groups} groups", fontsize=8)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    with naming_file(path):
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cell(value) -> str:
    if value is None:
        return "-"
    return format(value, ".4g") if isinstance(value, float) else str(value)


def _structure_table(rows: list[dict]) -> str:
    """One row per learned structure (`structure_report`), one column per field any row has."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("name", "kind")]
    lines = [
        "| structure | kind | " + " | ".join(keys) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for r in rows:
        cells = [r["name"], r["kind"], *(_cell(r.get(k)) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_run_report(
    out_dir: Path, config: TrainConfig, result: RunResult, model: nn.Module
) -> None:
    """`report.md`, `curves.png` and (soft shuffles only) `permutations.png` in `out_dir`."""
    title = f"{config.model}, {config.variant}, {config.dataset}"
    plot_curves(result.history, out_dir / "curves.png", title)
    has_heatmaps = plot_permutations(model, out_dir / "permutations.png", title)
    lines = [
        f"# {title}",
        "",
        f"- soft accuracy {result.soft_acc:.4f}, frozen accuracy {result.frozen_acc:.4f} "
        f"({result.epochs} epochs, {result.time_per_epoch:.1f} s/epoch)",
        f"- params {result.params:,} at inference (+ {result.shuffle_params:,} structure "
        "params in training); "
        f"{result.macs / 1e6:.2f} MFLOPs at inference "
        f"(+ {result.shuffle_macs / 1e6:.2f} MFLOPs of soft mixing in training)",
        *(
            []
            if result.frozen_certified_acc is None
            else [
                f"- certified accuracy at l2 radius {config.certify:g}: soft "
                f"{result.soft_certified_acc:.4f}, frozen {result.frozen_certified_acc:.4f}"
            ]
        ),
        f"- final P(M) {_fmt(result.final_penalty, '.4g')}, "
        f"distance to permutations {_fmt(result.final_distance, '.4g')}",
        "",
        "![curves](curves.png)",
        "",
    ]
    if has_heatmaps:
        lines += ["![permutations](permutations.png)", ""]
    if result.layers:
        lines += [_structure_table(result.layers), ""]
    certified = config.certify is not None
    extra = " val certified |" if certified else ""
    lines += [f"| epoch | train loss | train acc | val acc |{extra} lr | penalty scale | P(M) |"]
    lines += ["|" + " ---: |" * (8 if certified else 7)]
    lines += [
        f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {r['val_acc']:.4f} "
        + (f"| {r['val_certified_acc']:.4f} " if certified else "")
        + f"| {r['lr']:.4g} | {r['penalty_scale']:.3g} | {_fmt(r['penalty'], '.4g')} |"
        for r in result.history
    ]
    lines += ["", "Configuration:", "", "```"]
    lines += [f"{k} = {v!r}" for k, v in config.to_dict().items()]
    lines += ["```", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
