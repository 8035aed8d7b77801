"""One training step of the training program (`_Run._step`: forward under `--amp`, loss and
penalties, backward, SGD step with the projection of every learned matrix, schedule) for
ShuffleNet v1 g8 0.25x, CIFAR stem, 32x32, batch 64, with the learned and the fixed shuffle:
eager against `--compile`, contiguous against `--channels-last`, float32 against `--amp bf16`
(and `--amp fp16` on CUDA).

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


def step_fn(shuffle: str, mode: str, layout: str, amp: str, device: str, out_dir: str):
    """The training program's step for one variant, on a fixed batch, synced; not yet run."""
    torch._dynamo.reset()
    config = TrainConfig(
        model=MODEL,
        structures=(asx.ShuffleConfig(shuffle),),
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
    run.net.train()
    images, labels = data.train.tensors
    x = run._batch(images[:BATCH], torch.Generator().manual_seed(0))
    y = labels[:BATCH].to(device)

    def step() -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--shuffle", default="learned,fixed")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
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
