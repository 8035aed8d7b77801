"""Mixed precision and the compiled training step: `--amp bf16` autocasts the model while the
learned shuffle's exact parts (M, P(M) and its gradient, the projection, the rounding) stay
float32; `--amp fp16` is refused off CUDA; `--compile` trains the same model through
torch.compile; checkpoints resume with the same flags and refuse another precision."""

import functools
import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.train import run_training
from autoshuffle_ext.train.cli import main
from autoshuffle_ext.train.config import TrainConfig
from autoshuffle_ext.train.data import load_dataset
from autoshuffle_ext.train.distributed import init_distributed
from autoshuffle_ext.train.errors import ConfigError
from autoshuffle_ext.train.loop import autocast, check_precision
from tests.test_train_cli import TINY
from tests.test_train_ddp import WORLD, _free_port

BF16 = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)


def _shuffle(seed: int = 0) -> asx.LearnedShuffle:
    return asx.LearnedShuffle(24, 3, generator=torch.Generator().manual_seed(seed))


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(24, 24, 1), _shuffle(), nn.Conv2d(24, 24, 1))


def test_the_penalty_and_its_gradient_under_autocast_equal_float32s_exactly():
    x = torch.randn(4, 24, 6, 6)
    grads, values = {}, {}
    for precision in ("float32", "bf16"):
        net = _net()
        shuffle = net[1]
        if precision == "bf16":
            with BF16():
                assert net[0](x).dtype == torch.bfloat16  # the mix gets a bf16 activation
                y = net(x)
            assert y.dtype == torch.bfloat16
        else:
            y = net(x)
        pen = asx.penalty(net)  # the forward's P(M), reused
        assert pen.dtype == torch.float32
        values[precision] = pen.detach()
        pen.backward()
        grads[precision] = shuffle.weight.grad.clone()
        assert shuffle.weight.grad.dtype == torch.float32
    assert torch.equal(values["bf16"], values["float32"])
    assert torch.equal(grads["bf16"], grads["float32"])
    # Computed afresh inside an autocast region, too.
    net = _net()
    with BF16():
        inside = net[1].raw_penalty()
    assert torch.equal(inside.detach(), asx.ops.l1l2_penalty(net[1].weight).detach())


def test_a_bf16_step_keeps_m_float32_projected_and_rounds_as_float32_does():
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    asx.attach_projection(optimizer, net)
    x = torch.randn(8, 24, 6, 6)
    with BF16():
        loss = net(x).float().square().mean()
    (loss + asx.penalty(net)).backward()
    optimizer.step()
    M = net[1].weight
    assert M.dtype == torch.float32
    ones = torch.ones(24)
    torch.testing.assert_close(M.sum(0), ones, atol=1e-5, rtol=0)
    torch.testing.assert_close(M.sum(1), ones, atol=1e-5, rtol=0)
    expected = net[1].perm
    with BF16():  # rounding inside an autocast region: the same exact assignment
        frozen = asx.freeze(net)
    assert torch.equal(frozen[1].perm, expected)


def test_a_bf16_loss_is_close_to_the_float32_loss(tmp_path):
    losses = {}
    for amp in ("off", "bf16"):
        out = tmp_path / amp
        assert main([*TINY, "--limit-batches", "1", "--amp", amp, "--out", str(out)]) == 0
        (row,) = json.loads((out / "learned" / "metrics.json").read_text())
        losses[amp] = row["train_loss"]
    assert losses["bf16"] == pytest.approx(losses["off"], rel=2e-2)


def test_fp16_is_refused_on_the_cpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--device", "cpu", "--amp", "fp16", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--amp fp16 needs CUDA" in err and "--amp bf16" in err
    with pytest.raises(ConfigError, match="--amp fp16 needs CUDA"):
        TrainConfig(amp="fp16", device="cpu")
    with pytest.raises(ConfigError, match="--amp must be one of"):
        TrainConfig(amp="int8")
    # The Python API with a config made for CUDA, run on the CPU.
    config = TrainConfig(amp="fp16", device="cuda")
    with pytest.raises(ConfigError, match="--amp fp16 needs CUDA"):
        check_precision(config, torch.device("cpu"))
    assert not (tmp_path / "run").exists()


def test_autocast_is_off_by_default():
    with autocast(TrainConfig(), torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(TrainConfig(amp="bf16"), torch.device("cpu")):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bf16_checkpoints_resume_with_the_same_flags_only(tmp_path, capsys):
    out = tmp_path / "run"
    two = [*TINY, "--epochs", "2", "--amp", "bf16", "--out", str(out)]
    assert main([*two, "--stop-after-epochs", "1"]) == 0
    checkpoint = out / "learned" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    off = [*TINY, "--epochs", "2", "--out", str(out), "--resume"]
    assert main(off) == 2
    assert "amp: checkpoint 'bf16', now 'off'" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before
    assert main([*two, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err
    assert len(json.loads((out / "learned" / "metrics.json").read_text())) == 2


def test_a_checkpoint_from_before_amp_resumes_in_float32_only(tmp_path, capsys):
    out = tmp_path / "run"
    two = [*TINY, "--epochs", "2", "--out", str(out)]
    assert main([*two, "--stop-after-epochs", "1"]) == 0
    checkpoint = out / "learned" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    del state["identity"]["amp"]  # as written before the field existed
    torch.save(state, checkpoint)
    assert main([*two, "--resume", "--amp", "bf16"]) == 2
    assert "amp: checkpoint 'off', now 'bf16'" in capsys.readouterr().err
    assert main([*two, "--resume"]) == 0


@pytest.fixture
def quick_compile(monkeypatch):
    """torch.compile with the aot_eager backend: dynamo traces the model and AOTAutograd its
    forward and backward, through the custom ops' fake kernels and autograd formulas, as
    inductor's would, without inductor's C++ build (minutes on a busy 2-core CPU; the
    benchmark runs inductor)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_bf16_channels_last_run_trains_the_learned_shuffle(tmp_path, quick_compile):
    out = tmp_path / "run"
    flags = ["--compile", "--amp", "bf16", "--channels-last", "--epochs", "2"]
    assert main([*TINY, *flags, "--stop-after-epochs", "1", "--out", str(out)]) == 0
    # --compile is a runtime flag: the run resumes without it (and trains on).
    assert main([*TINY, "--amp", "bf16", "--epochs", "2", "--out", str(out), "--resume"]) == 0
    result = json.loads((out / "learned" / "result.json").read_text())
    assert result["config"]["amp"] == "bf16" and result["epochs"] == 2
    history = json.loads((out / "learned" / "metrics.json").read_text())
    assert all(row["penalty"] > 0 for row in history)


def test_the_compiled_step_matches_the_eager_step(tmp_path, quick_compile):
    losses = {}
    for flags in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flags else "eager")
        assert main([*TINY, "--limit-batches", "1", *flags, "--out", str(out)]) == 0
        (row,) = json.loads((out / "learned" / "metrics.json").read_text())
        losses[bool(flags)] = (row["train_loss"], row["penalty"])
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    torch.compile = functools.partial(torch.compile, backend="aot_eager")  # this process only
    device = torch.device("cpu")
    ctx = init_distributed(device)
    config = TrainConfig(
        model="shufflenet_v1_g3_x0_25",
        epochs=1,
        batch_size=16,
        limit_batches=2,
        progress=False,
        amp="bf16",
        compile=True,
    )
    result = run_training(config, load_dataset("digits", None), out_dir, ctx, device)
    torch.save(asx.learned_matrices(result.model), os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_ddp_wraps_the_compiled_model_and_keeps_the_ranks_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 2 and checkpoint["config"]["amp"] == "bf16"
    for name, matrix in ranks[0].items():
        assert matrix.dtype == torch.float32
        assert torch.equal(matrix, ranks[1][name]), name
        assert torch.equal(matrix, checkpoint["model"][f"{name}.weight"]), name


@pytest.mark.slow
def test_inductor_compiles_the_learned_shuffle_step(tmp_path):
    """The real backend (inductor: C++ code for the CPU); minutes on a busy machine."""
    torch._dynamo.reset()
    out = tmp_path / "run"
    assert main([*TINY, "--compile", "--amp", "bf16", "--out", str(out)]) == 0
    assert (out / "learned" / "result.json").is_file()
