"""One training step of the training program (`_Run._step`: forward under `--amp`, loss and
penalties, backward, SGD step with the projection of every learned matrix, schedule) for
ShuffleNet v1 g8 0.25x, CIFAR stem, 32x32, batch 64, with the learned and the fixed shuffle:
eager against `--compile`, contiguous against `--channels-last`, float32 against `--amp bf16`
(and `--amp fp16` on CUDA).

Run: `python -m pytest bench/bench_train_step.py --benchmark-only` (one group per shuffle and
device; the compiled variants compile in their untimed warm-up steps, about a minute each on a
2-core CPU). `BENCH_TRAIN_BATCH=256` times another batch size.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

import autoshuffle_ext as asx
from autoshuffle_ext.train.config import TrainConfig
from autoshuffle_ext.train.data import DataSplits
from autoshuffle_ext.train.distributed import DistContext
from autoshuffle_ext.train.loop import _Run
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("shuffle", ["learned", "fixed"])
def test_train_step(benchmark, shuffle, mode, layout, amp, device, tmp_path):
    if amp == "fp16" and device != "cuda":
        pytest.skip("--amp fp16 is CUDA only")
    benchmark.group = f"train step {MODEL} cifar 32x32 batch {BATCH} {shuffle} {device}"
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
    run = _Run(config, data, tmp_path, DistContext(), torch.device(device))
    run.net.train()
    images, labels = data.train.tensors
    x = run._batch(images[:BATCH], torch.Generator().manual_seed(0))
    y = labels[:BATCH].to(device)

    def step() -> None:
        run._step(x, y)
        sync(device)

    for _ in range(WARMUP_STEPS):
        step()
    benchmark(step)
