"""Spline activations through the one conversion pass: `SplineConfig` on a user's network and on
the ShuffleNet models, and `autoshuffle-train --activation spline`."""

import json

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.train.cli import main


class Net(nn.Module):
    def __init__(self, reuse: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 1)
        self.act2 = self.act1 if reuse else nn.LeakyReLU(0.2)
        self.reuse = reuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))


def test_each_activation_module_becomes_a_spline_that_starts_as_it():
    torch.manual_seed(0)
    net = Net()
    x = 3 * torch.randn(2, 3, 5, 5)
    converted, report = asx.convert(net, asx.SplineConfig(), x[:1], return_report=True)
    assert [(s.name, s.became) for s in report.sites] == [
        ("act1", "LinearSpline"),
        ("act2", "LinearSpline"),
    ]
    assert converted.act1.num_channels == 6 and converted.act2.num_channels == 5
    with torch.no_grad():  # inside the grid [-4, 4] and beyond it (linear with the end slopes)
        torch.testing.assert_close(converted(x), net(x), rtol=1e-5, atol=1e-5)
    frozen = asx.freeze(converted)
    assert isinstance(frozen.act1, asx.SparseLinearSpline)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), converted(x), rtol=1e-5, atol=1e-5)


def test_an_activation_module_called_at_two_places_is_left_and_said():
    net = Net(reuse=True)
    with pytest.warns(UserWarning, match="nothing converted in Net"):
        converted, report = asx.convert(
            net, asx.SplineConfig(), torch.randn(1, 3, 5, 5), return_report=True
        )
    assert report.sites == [] and isinstance(converted.act1, nn.ReLU)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_shufflenet_with_spline_activations_starts_as_the_relu_model(version):
    x = torch.randn(2, 3, 32, 32)
    models = []
    for activation in ("relu", "spline"):
        torch.manual_seed(0)
        if version == "v1":
            model = asx.models.shufflenet_v1(3, 0.25, 10, "cifar", activation=activation)
        else:
            model = asx.models.shufflenet_v2(0.5, 10, "cifar", activation=activation)
        models.append(model.eval())
    relu, spline = models
    splines = [m for _, m in asx.structures(spline, asx.LinearSpline)]
    relus = [m for m in relu.modules() if isinstance(m, nn.ReLU)]
    assert len(splines) == len(relus) > 0
    with torch.no_grad():
        torch.testing.assert_close(spline(x), relu(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="activation must be one of"):
        asx.models.shufflenet_v2(0.5, 10, "cifar", activation="gelu")


def test_the_training_program_trains_spline_activations(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--batch-size", "32",
        "--limit-batches", "2", "--no-progress", "--activation", "spline",
        "--spline-lambda", "1e-4", "--spline-lr", "0.01", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "learned" / "result.json").read_text())
    splines = [r for r in result["layers"] if r["kind"] == "LinearSpline"]
    assert len(splines) == 17  # the stem's ReLU and each unit's first
    structures = result["config"]["structures"]
    assert structures[-1]["structure"] == "spline" and structures[-1]["penalty_weight"] == 1e-4
    checkpoint = torch.load(out / "learned" / "checkpoint.pt", weights_only=False)
    groups = {g.get("name"): g for g in checkpoint["optimizer"]["param_groups"]}
    assert groups["spline"]["initial_lr"] == 0.01
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv[:9], "--spline-lambda", "1e-4", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert "--spline-lambda applies to --activation spline only, got --activation relu" in err
