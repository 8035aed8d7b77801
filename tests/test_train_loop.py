"""The training loop: schedules, atomic checkpoints, exact resume, and a diverging run that
keeps its last good checkpoint."""

import json
import math

import pytest
import torch

from autoshuffle_ext.train import loop
from autoshuffle_ext.train.checkpoint import atomic_save, load_checkpoint
from autoshuffle_ext.train.cli import main
from autoshuffle_ext.train.errors import CheckpointError
from autoshuffle_ext.train.metrics import write_metrics
from autoshuffle_ext.train.schedules import WarmupCosine, penalty_scale_at

TINY = [
    "--model", "shufflenet_v1_g3_x0_25", "--batch-size", "32", "--limit-batches", "3",
    "--no-progress",
]  # fmt: skip


def test_warmup_then_cosine():
    f = WarmupCosine(total_steps=10, warmup_steps=2)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == 1.0 and f(10) == pytest.approx(0.0)
    assert f(6) == pytest.approx(0.5)
    values = [f(s) for s in range(2, 11)]
    assert values == sorted(values, reverse=True)


def test_penalty_scale_ramps_between_start_and_end_then_holds():
    assert penalty_scale_at(0, 100, "linear", 0.0, 0.5) == pytest.approx(1 / 50)
    assert penalty_scale_at(24, 100, "linear", 0.0, 0.5) == pytest.approx(0.5)
    assert penalty_scale_at(80, 100, "linear", 0.0, 0.5) == 1.0
    assert penalty_scale_at(19, 100, "linear", 0.2, 0.6) == 0.0
    assert penalty_scale_at(39, 100, "linear", 0.2, 0.6) == pytest.approx(0.5)
    assert penalty_scale_at(59, 100, "linear", 0.2, 0.6) == 1.0
    assert penalty_scale_at(0, 100, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        penalty_scale_at(0, 100, "cosine")
    with pytest.raises(ValueError, match="0 <= start <= end <= 1"):
        penalty_scale_at(0, 100, "linear", 0.6, 0.5)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1}, path)
    before = path.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"epoch": 2}, path)
    assert path.read_bytes() == before


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", {})
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of autoshuffle-train"):
        load_checkpoint(tmp_path / "other.pt", {})


def _final_state(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)


@pytest.mark.parametrize("shuffle", ["learned", "sinkhorn"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, shuffle):
    """Killed after epoch 1 (and again after epoch 2), resumed from the checkpoint: the same
    weights, optimizer state and metrics as the run that never stopped."""
    args = [*TINY, "--shuffle", shuffle, "--epochs", "3"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    interrupted = [*args, "--out", str(tmp_path / "resumed")]
    assert main([*interrupted, "--stop-after-epochs", "1"]) == 0
    assert _final_state(tmp_path / "resumed" / shuffle)["epoch"] == 1
    assert main([*interrupted, "--resume", "--stop-after-epochs", "1"]) == 0
    assert main([*interrupted, "--resume"]) == 0

    a, b = (
        _final_state(tmp_path / "straight" / shuffle),
        _final_state(tmp_path / "resumed" / shuffle),
    )
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b, strict=True))
    drop_time = [{k: v for k, v in row.items() if k != "epoch_time"} for row in a["history"]]
    assert drop_time == [{k: v for k, v in r.items() if k != "epoch_time"} for r in b["history"]]


def test_channels_last_trains_the_same_model_in_the_other_layout(tmp_path):
    # One step: on this tiny problem the first steps are large (stem gradients ~40 at lr 0.02),
    # so later steps amplify the kernels' rounding differences, with the fixed shuffle too.
    # Blend 0.5: from the default near-uniform start the first step pushes most entries of the
    # small last-stage matrices across zero, where the projection's threshold turns last-bit
    # differences of the two layouts into different supports.
    args = [*TINY, "--epochs", "1", "--limit-batches", "1", "--shuffle-blend", "0.5"]
    assert main([*args, "--out", str(tmp_path / "nchw")]) == 0
    assert main([*args, "--channels-last", "--out", str(tmp_path / "nhwc")]) == 0
    a, b = _final_state(tmp_path / "nchw" / "learned"), _final_state(tmp_path / "nhwc" / "learned")
    convs = [k for k, v in b["model"].items() if v.dim() == 4 and v.shape[-1] > 1]
    assert convs and all(
        b["model"][k].is_contiguous(memory_format=torch.channels_last) for k in convs
    )
    assert not all(a["model"][k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    # Same data, same step: only the summation order of the kernels differs.
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=1e-3, msg=key)
    assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=1e-5)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    calls = {"n": 0}
    real = loop.task_loss

    def diverging(logits, labels, smoothing, margin=None):
        calls["n"] += 1
        loss = real(logits, labels, smoothing, margin)
        return loss * float("nan") if calls["n"] > 4 else loss  # in epoch 2 (3 steps each)

    monkeypatch.setattr(loop, "task_loss", diverging)
    out = tmp_path / "run"
    code = main([*TINY, "--epochs", "3", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2, step 5" in err and "is kept unchanged" in err
    state = _final_state(out / "learned")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len((out / "learned" / "metrics.csv").read_text().splitlines()) == 2  # header + 1


def test_nan_evaluation_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = loop.evaluate

    def diverged_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss, acc, certified = real(*args, **kwargs)
        return (float("nan"), acc, certified) if calls["n"] == 2 else (loss, acc, certified)

    monkeypatch.setattr(loop, "evaluate", diverged_in_epoch_2)
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "non-finite validation loss after epoch 2 (nan)" in err and "(epoch 1)" in err
    assert _final_state(out / "learned")["epoch"] == 1
    history = json.loads((out / "learned" / "metrics.json").read_text())
    assert len(history) == 1 and math.isfinite(history[0]["val_loss"])


def test_metrics_json_is_strict_json_even_for_non_finite_values(tmp_path):
    write_metrics(tmp_path, [{"epoch": 1, "val_loss": float("nan"), "x": [float("inf"), 1.0]}])
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == [{"epoch": 1, "val_loss": None, "x": [None, 1.0]}]


def _corrupt(path, change):
    state = torch.load(path, weights_only=False)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("optimizer"), "KeyError: 'optimizer'"),
        (
            lambda s: s["model"].__setitem__("fc.weight", torch.zeros(3, 3)),
            "RuntimeError: Error(s) in loading state_dict",
        ),
        (lambda s: s.__setitem__("epoch", "one"), "ValueError"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_a_checkpoint_error(tmp_path, capsys, change, message):
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "2", "--out", str(out)]
    assert main([*args, "--stop-after-epochs", "1"]) == 0
    checkpoint = out / "learned" / "checkpoint.pt"
    _corrupt(checkpoint, change)
    before = checkpoint.read_bytes()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoshuffle-train: error:") and "does not fit this run" in err
    assert message in err and "Traceback" not in err
    assert checkpoint.read_bytes() == before
