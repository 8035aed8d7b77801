"""`autoshuffle-train --model lipconvnet_small --loss hinge --certify EPS`: a Lipschitz network
trained with the hinge loss, its clean and certified accuracy per epoch in metrics, report and
result."""

import json

import pytest
import torch

from autoshuffle_ext.train.cli import main
from autoshuffle_ext.train.config import TrainConfig
from autoshuffle_ext.train.errors import ConfigError
from autoshuffle_ext.train.loop import task_loss


def test_lipconvnet_trains_with_the_hinge_loss_and_reports_certified_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--model", "lipconvnet_small", "--epochs", "2", "--batch-size", "32",
        "--limit-batches", "3", "--no-progress", "--shuffle", "none", "--loss", "hinge",
        "--certify", "0.1412", "--lr", "0.01", "--out", str(out),
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="no channel shuffle found in LipConvNet"):
        assert main(argv) == 0
    metrics = json.loads((out / "none" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics] == [1, 2]
    for row in metrics:
        assert 0.0 <= row["val_certified_acc"] <= row["val_acc"] <= 1.0
    result = json.loads((out / "none" / "result.json").read_text())
    assert 0.0 <= result["frozen_certified_acc"] <= result["frozen_acc"]
    assert result["soft_certified_acc"] <= result["soft_acc"]
    report = (out / "none" / "report.md").read_text()
    assert "certified accuracy at l2 radius 0.1412" in report and "val certified" in report
    assert [r["kind"] for r in result["layers"]].count("BCOPConv2d") == 2
    assert "certified at 0.1412" in capsys.readouterr().out


def test_the_hinge_loss_has_margin_sqrt2_eps_and_needs_a_radius():
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    eps = 0.25
    expected = torch.nn.functional.multi_margin_loss(logits, labels, margin=2**0.5 * eps)
    torch.testing.assert_close(task_loss(logits, labels, 0.0, 2**0.5 * eps), expected)
    with pytest.raises(ConfigError, match=r"--loss hinge needs --certify EPS"):
        TrainConfig(loss="hinge")
    with pytest.raises(ConfigError, match=r"--certify must be >= 0 and finite, got -1"):
        TrainConfig(certify=-1)


def test_certify_refuses_a_model_without_a_lipschitz_bound(tmp_path, capsys):
    argv = [
        "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--limit-batches", "1",
        "--no-progress", "--certify", "0.1", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--certify needs a Lipschitz bound of the model" in err and "BatchNorm2d" in err
    assert not (tmp_path / "run" / "learned" / "checkpoint.pt").exists()
