"""Data parallel training over 2 gloo processes keeps every learned matrix identical on every
rank, and equal to what rank 0 checkpoints."""

import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp

import autoshuffle_ext as asx
from autoshuffle_ext.train import TrainConfig, run_training
from autoshuffle_ext.train.data import load_dataset
from autoshuffle_ext.train.distributed import init_distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    device = torch.device("cpu")
    ctx = init_distributed(device)
    config = TrainConfig(
        model="shufflenet_v1_g3_x0_25",
        epochs=2,
        batch_size=16,
        limit_batches=3,
        progress=False,
    )
    result = run_training(config, load_dataset("digits", None), out_dir, ctx, device)
    torch.save(asx.learned_matrices(result.model), os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_keep_the_learned_matrices_identical(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 2 * 3
    assert len(ranks[0]) == 16
    initial = asx.LearnedShuffle(15, 3, generator=torch.Generator().manual_seed(0)).weight
    for name, matrix in ranks[0].items():
        assert torch.equal(matrix, ranks[1][name]), name  # bitwise, not approximately
        assert torch.equal(matrix, checkpoint["model"][f"{name}.weight"]), name
    assert not torch.equal(ranks[0]["stages.0.0.shuffle"], initial.detach())  # it trained


def test_torchrun_launches_the_cli(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
        "-m", "autoshuffle_ext.train", "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1",
        "--batch-size", "16", "--limit-batches", "2", "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({WORLD} process(es), cpu)" in done.stdout
    assert done.stdout.count("| learned |") == 1  # only rank 0 prints the table
