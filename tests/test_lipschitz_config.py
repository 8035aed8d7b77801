"""Orthogonal convolutions through the one conversion pass (`OrthogonalConfig`) and the training
program's `--convs orthogonal`."""

import json

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import OrthogonalConfig
from autoshuffle_ext.train.cli import main


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.same = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.patch = nn.Conv2d(8, 32, 2, stride=2)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.valid = nn.Conv2d(32, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.valid(self.depthwise(self.patch(self.same(x))))


def test_the_convs_a_bcop_can_stand_for_become_orthogonal():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
    net = Net().double()
    converted, report = asx.convert(net, OrthogonalConfig(), x[:1], return_report=True)
    assert [(s.name, s.became) for s in report.sites] == [
        ("same", "BCOPConv2d"),
        ("patch", "BCOPConv2d"),
    ]
    assert isinstance(converted.depthwise, nn.Conv2d) and isinstance(converted.valid, nn.Conv2d)
    assert converted.same.matrices.dtype == torch.float64
    with torch.no_grad():  # in == out, no bias: the operator keeps every norm
        y = converted.same(x)
        torch.testing.assert_close(y.norm(), x.norm(), rtol=1e-4, atol=0)
        assert converted(x).shape == net(x).shape
    frozen = asx.freeze(converted.eval())
    assert not list(asx.structures(frozen))
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), converted(x), rtol=1e-6, atol=1e-8)
    exported = torch.export.export(frozen, (x,))
    torch.testing.assert_close(exported.module()(x), frozen(x))


def test_orthogonal_config_options_are_checked():
    with pytest.raises(ValueError, match="kind must be one of"):
        OrthogonalConfig(kind="unitary")
    assert not OrthogonalConfig("plain").matches(nn.Conv2d(4, 4, 3, padding=1), None)


def test_the_training_program_makes_the_convs_orthogonal(tmp_path):
    out = tmp_path / "run"
    argv = [
        "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--batch-size", "32",
        "--limit-batches", "2", "--no-progress", "--convs", "orthogonal",
        "--orthogonal-lr", "0.01", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "learned" / "result.json").read_text())
    kinds = [r["kind"] for r in result["layers"]]
    # The stem's 3x3 and stage 2's first (ungrouped) pointwise conv; grouped ones stay.
    assert kinds.count("BCOPConv2d") == 2 and kinds.count("LearnedShuffle") == 16
    checkpoint = torch.load(out / "learned" / "checkpoint.pt", weights_only=False)
    groups = {g.get("name"): g for g in checkpoint["optimizer"]["param_groups"]}
    assert groups["orthogonal"]["initial_lr"] == 0.01
