"""How soon a learned M becomes sparse: the non-zero fraction of every learned matrix, and the
share of them that the sparse mixing serves, every `--every` steps of a real training run (the
training program's own step, data and schedule).

    python -m bench.density_curve --data-dir DATA --epochs 6 --stop-after-epochs 2 \
        --out runs/density

writes `<out>/density.csv` and `<out>/density.png` and prints when the density first falls below
10% and 5% and when every matrix is first served sparse.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

import autoshuffle_ext as asx
from autoshuffle_ext.train.config import TrainConfig
from autoshuffle_ext.train.data import load_dataset
from autoshuffle_ext.train.distributed import DistContext
from autoshuffle_ext.train.loop import _Run, resolve_config
from autoshuffle_ext.train.report import pyplot


def snapshot(model: torch.nn.Module) -> dict:
    """Non-zero fraction over all learned matrices, and the share served by the sparse path."""
    shuffles = [m for m in model.modules() if isinstance(m, asx.LearnedShuffle)]
    with torch.no_grad():
        nonzero = sum(int((m.weight != 0).sum()) for m in shuffles)
        total = sum(m.weight.numel() for m in shuffles)
        sparse = sum(m.sparse_index() is not None for m in shuffles)
    return {"density": nonzero / total, "sparse_share": sparse / len(shuffles)}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Density (log scale) and the share served sparse (linear, right axis) against epochs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    epochs = [float(r["epoch"]) for r in rows]
    ax.semilogy(epochs, [float(r["density"]) for r in rows], color="tab:blue")
    ax.set(xlabel="epoch", ylabel="non-zero fraction of M", title=title)
    ax.grid(alpha=0.3)
    share = ax.twinx()
    share.plot(epochs, [float(r["sparse_share"]) for r in rows], color="tab:orange", lw=0.8)
    share.set(ylabel="share of matrices served sparse", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="shufflenet_v1_g8_x0_25")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--stop-after-epochs", type=int, default=None, help="of a longer schedule")
    p.add_argument("--every", type=int, default=10, help="steps between two snapshots")
    p.add_argument("--shuffle-init", default="shuffle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/density"))
    p.add_argument("--plot-only", action="store_true", help="redraw from <out>/density.csv")
    args = p.parse_args()
    if args.plot_only:
        with open(args.out / "density.csv") as f:
            rows = list(csv.DictReader(f))
        plot(rows, args.out / "density.png", f"{args.model}, learned, init {args.shuffle_init}")
        return
    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        stop_after_epochs=args.stop_after_epochs,
        seed=args.seed,
        structures=(asx.ShuffleConfig("learned", init=args.shuffle_init),),
        channels_last=True,
        progress=False,
    )
    data = load_dataset(config.dataset, config.data_dir)
    run = _Run(resolve_config(config, data), data, args.out, DistContext(), torch.device("cpu"))
    rows = [{"step": 0, "epoch": 0.0, **snapshot(run.model)}]
    step = run._step
    steps_per_epoch = run.steps_per_epoch

    def recording_step(*inputs):
        out = step(*inputs)
        if run.step % args.every == 0:
            rows.append(
                {"step": run.step, "epoch": run.step / steps_per_epoch, **snapshot(run.model)}
            )
        return out

    run._step = recording_step
    args.out.mkdir(parents=True, exist_ok=True)
    run.train()
    with open(args.out / "density.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "density.png", f"{args.model}, learned, init {args.shuffle_init}")
    for label, test in [
        ("density < 10%", lambda r: r["density"] < 0.1),
        ("density < 5%", lambda r: r["density"] < 0.05),
        ("every matrix served sparse", lambda r: r["sparse_share"] == 1),
    ]:
        first = next((r for r in rows if test(r)), None)
        print(f"{label}: " + ("never" if first is None else f"epoch {first['epoch']:.2f}"))


if __name__ == "__main__":
    main()
