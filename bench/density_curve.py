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
    args = p.parse_args()
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
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    epochs = [r["epoch"] for r in rows]
    ax.semilogy(epochs, [r["density"] for r in rows], label="non-zero fraction of M")
    ax.plot(epochs, [max(r["sparse_share"], 1e-3) for r in rows], label="share served sparse")
    ax.set(xlabel="epoch", title=f"{args.model}, learned, init {args.shuffle_init}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "density.png", dpi=100)
    for level in (0.1, 0.05):
        first = next((r for r in rows if r["density"] < level), None)
        print(
            f"density < {level:.0%}: "
            + ("never" if first is None else f"epoch {first['epoch']:.2f}")
        )
    first = next((r for r in rows if r["sparse_share"] == 1), None)
    print("every matrix sparse: " + ("never" if first is None else f"epoch {first['epoch']:.2f}"))


if __name__ == "__main__":
    main()
