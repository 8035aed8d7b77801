"""One training step of the training program (`_Run._step`: forward under `--amp`, loss and
penalties, backward, SGD step with the projection of every learned matrix, schedule) for
ShuffleNet v1 g8 0.25x, CIFAR stem, 32x32, batch 64, with the learned and the fixed shuffle:
eager against `--compile`, contiguous against `--channels-last`, float32 against `--amp bf16`
(and `--amp fp16` on CUDA).

`python -m bench.bench_train_step --converged` instead times the step as M converges: fixed
against learned with every M at its start (dense), and with every M 95% zeros or more (the
sparse mixing; and the same M forced dense, `sparse_below=0`), for v1 g8 0.25x and v2 0.5x.

Run: `python -m pytest bench/bench_train_step.py --benchmark-only` (one group per shuffle and
device; the compiled variants compile in their untimed warm-up steps, about a minute each on a
2-core CPU). `BENCH_TRAIN_BATCH=256` times another batch size. The ratios of bench/RESULTS.md
come from the round-robin form, which slows every variant alike on a shared machine:
`python -m bench.bench_train_step --rounds 30 [--shuffle learned] [--device cpu]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import pytest
import torch
from torch.utils.data import TensorDataset

import autoshuffle_ext as asx
from autoshuffle_ext.train.config import TrainConfig
from autoshuffle_ext.train.data import DataSplits
from autoshuffle_ext.train.distributed import DistContext
from autoshuffle_ext.train.loop import _Run, resolve_config
from bench.round_robin import round_robin
from bench.timing import sync

MODEL = "shufflenet_v1_g8_x0_25"
BATCH = int(os.environ.get("BENCH_TRAIN_BATCH", "64"))
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
WARMUP_STEPS = 3  # the compiled step compiles in the first; the others settle the allocator


def _data(batches: int = 2) -> DataSplits:
    """Random CIFAR-shaped images: a step's time does not depend on what they show."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batches * BATCH, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (batches * BATCH,), generator=g)
    split = TensorDataset(images, labels)
    mean, std = torch.full((3,), 0.5), torch.full((3,), 0.25)
    return DataSplits(split, split, [str(i) for i in range(10)], mean, std, "cifar", 32, True, 4)


def converge_(model: torch.nn.Module, density: float, generator: torch.Generator) -> float:
    """Sets every learned M to a doubly stochastic matrix of at most `density` non-zeros (at
    least one per row): a permutation P, plus 0.2 of a second one on as many channels as the
    density allows (M = 0.8 P + 0.2 P Q, Q swapping disjoint pairs of channels). Returns the
    density reached over all matrices."""
    nonzero = total = 0
    for m in model.modules():
        if not isinstance(m, asx.LearnedShuffle):
            continue
        C = m.num_channels
        base = torch.randperm(C, generator=generator)
        swaps = min(C // 2, max(0, int(density * C * C) - C) // 2)
        other = base.clone()
        pairs = torch.randperm(C, generator=generator)[: 2 * swaps].view(-1, 2)
        other[pairs[:, 0]], other[pairs[:, 1]] = base[pairs[:, 1]], base[pairs[:, 0]]
        M = 0.8 * asx.permutation_matrix(base) + 0.2 * asx.permutation_matrix(other)
        with torch.no_grad():
            m.weight.copy_(M)
        nonzero += int((M != 0).sum())
        total += C * C
    return nonzero / max(total, 1)


def step_fn(
    shuffle: str,
    mode: str,
    layout: str,
    amp: str,
    device: str,
    out_dir: str,
    model: str = MODEL,
    converged: float | None = None,
    sparse_below: float | None = None,
):
    """The training program's step for one variant, on a fixed batch, synced; not yet run.
    `converged`: every learned M first set to that density (`converge_`)."""
    torch._dynamo.reset()
    options = {} if sparse_below is None else {"sparse_below": sparse_below}
    config = TrainConfig(
        model=model,
        structures=(asx.ShuffleConfig(shuffle, **options),),
        dataset="cifar10",
        stem="cifar",
        image_size=32,
        batch_size=BATCH,
        device=device,
        channels_last=layout == "channels_last",
        amp=amp,
        compile=mode == "compiled",
        progress=False,
        epochs=10_000,  # the schedule never runs out while the benchmark repeats the step
    )
    data = _data()
    run = _Run(resolve_config(config, data), data, out_dir, DistContext(), torch.device(device))
    targets = []
    if converged is not None:
        converge_(run.model, converged, torch.Generator().manual_seed(0))
        # A step's update moves M off that density (a zero entry with a negative gradient comes
        # back): every step starts again from it, as if late training held it there.
        targets = [
            (m.weight, m.weight.detach().clone())
            for m in run.model.modules()
            if isinstance(m, asx.LearnedShuffle)
        ]
    run.net.train()
    images, labels = data.train.tensors
    x = run._batch(images[:BATCH], torch.Generator().manual_seed(0))
    y = labels[:BATCH].to(device)

    def step() -> None:
        with torch.no_grad():
            for weight, target in targets:
                weight.copy_(target)
        run._step(x, y)
        sync(device)

    return step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("shuffle", ["learned", "fixed"])
def test_train_step(benchmark, shuffle, mode, layout, amp, device, tmp_path):
    if amp == "fp16" and device != "cuda":
        pytest.skip("--amp fp16 is CUDA only")
    benchmark.group = f"train step {MODEL} cifar 32x32 batch {BATCH} {shuffle} {device}"
    step = step_fn(shuffle, mode, layout, amp, device, str(tmp_path))
    for _ in range(WARMUP_STEPS):
        step()
    benchmark(step)


def converged_main(rounds: int, device: str, layouts: list[str]) -> None:
    """learned / fixed as M converges, both layouts, v1 and v2 (eager, float32)."""
    for model in (MODEL, "shufflenet_v2_x0_5"):
        for layout in layouts:
            with tempfile.TemporaryDirectory() as out:
                fns = {
                    "fixed": step_fn("fixed", "eager", layout, "off", device, out, model),
                    "learned, start (dense M)": step_fn(
                        "learned", "eager", layout, "off", device, out, model
                    ),
                    "learned, M 95% zeros, sparse mixing": step_fn(
                        "learned", "eager", layout, "off", device, out, model, converged=0.05
                    ),
                    "learned, M 95% zeros, dense mixing": step_fn(
                        "learned", "eager", layout, "off", device, out, model, 0.05, 0.0
                    ),
                }
                medians = round_robin(fns, rounds, warmup=WARMUP_STEPS)
            base = medians["fixed"]
            print(f"\n{model} batch {BATCH} {layout} {device}, {torch.get_num_threads()} threads")
            print("| variant | ms / step | vs fixed |\n| --- | ---: | ---: |")
            for name, seconds in medians.items():
                print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--shuffle", default="learned,fixed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--converged", action="store_true", help="the sparse-mixing table")
    parser.add_argument("--layouts", default="contiguous,channels_last")
    args = parser.parse_args()
    if args.converged:
        converged_main(args.rounds, args.device, args.layouts.split(","))
        return
    amps = ["off", "bf16", *(["fp16"] if args.device.startswith("cuda") else [])]
    for shuffle in args.shuffle.split(","):
        fns = {}
        with tempfile.TemporaryDirectory() as out:
            for mode in ("eager", "compiled"):
                for layout in ("contiguous", "channels_last"):
                    for amp in amps:
                        name = f"{mode} {layout} {amp}"
                        fns[name] = step_fn(shuffle, mode, layout, amp, args.device, out)
                        print(f"built {name}", flush=True)
            medians = round_robin(fns, args.rounds, warmup=WARMUP_STEPS)
        base = medians["eager contiguous off"]
        print(f"\n{MODEL} batch {BATCH} {shuffle} {args.device}, {torch.get_num_threads()} threads")
        print("| variant | ms / step | vs eager contiguous float32 |\n| --- | --- | --- |")
        for name, seconds in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"| {name} | {seconds * 1e3:.1f} | {base / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
