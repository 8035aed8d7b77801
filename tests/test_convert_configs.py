"""The conversion pass with several configs: what it keeps, refuses and says."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import OrthogonalConfig


class SpelledShuffle(nn.Module):
    """1x1 convs around a shuffle written in code (the rewrite makes a GraphModule)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 1)
        self.b = nn.Conv2d(8, 8, 1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(y)


def test_a_second_pass_keeps_the_shared_budget_of_the_first():
    x = torch.randn(1, 4, 5, 5)
    first = asx.convert(SpelledShuffle(), asx.GroupsConfig(budget=0.5), x)
    assert isinstance(first.group_budget, asx.GroupBudget)
    second, report = asx.convert(first, asx.ShuffleConfig(), x, return_report=True)
    assert isinstance(second, torch.fx.GraphModule) and len(report.sites) == 1
    budget = second.get_submodule("group_budget")
    assert isinstance(budget, asx.GroupBudget)
    assert {id(layer) for layer in budget.layers} == {
        id(m) for _, m in asx.structures(second, asx.DGConv2d)
    }
    assert asx.penalty(second).requires_grad


def test_a_module_registered_under_two_names_is_left_and_said():
    net = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
    net.alias = net[0]
    with pytest.warns(UserWarning, match="registered under several names"):
        converted, report = asx.convert(
            net, asx.GroupsConfig(), torch.randn(1, 4, 3, 3), return_report=True
        )
    assert type(converted[0]) is nn.Conv2d and converted.alias is converted[0]
    assert report.sites == []


def test_two_configs_matching_one_module_the_first_takes_it_and_it_is_said():
    net = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
    configs = [asx.GroupsConfig(), OrthogonalConfig()]
    converted, report = asx.convert(net, configs, torch.randn(1, 4, 3, 3), return_report=True)
    assert isinstance(converted[0], asx.DGConv2d)
    assert report.notes == ["0: GroupsConfig took it (OrthogonalConfig matched too)"]


def test_sinkhorn_options_reach_the_relaxation():
    model = asx.models.shufflenet_v2(
        0.5, 10, "cifar", shuffle="sinkhorn", shuffle_options={"temperature": 0.5, "iters": 3}
    )
    shuffles = [m for _, m in asx.structures(model, asx.SinkhornShuffle)]
    assert shuffles and all(s.temperature == 0.5 and s.iters == 3 for s in shuffles)
    with pytest.raises(TypeError, match=r"shuffle_options: .*'temprature'"):
        asx.models.shufflenet_v2(0.5, shuffle="sinkhorn", shuffle_options={"temprature": 0.5})


def test_a_config_asked_for_that_converts_nothing_is_an_error():
    from autoshuffle_ext.models import build_model

    with pytest.raises(ValueError, match=r"GroupsConfig \(groups\) found nothing to convert"):
        build_model("lipconvnet_small", 10, "cifar", [asx.GroupsConfig()])
    # The default shuffle, or none, on a model without shuffles: a warning, not an error.
    with pytest.warns(UserWarning, match="no channel shuffle found in LipConvNet"):
        build_model("lipconvnet_small", 10, "cifar", [asx.ShuffleConfig()])


def test_the_training_program_names_a_flag_that_would_do_nothing(tmp_path, capsys):
    from autoshuffle_ext.train.cli import main

    argv = [
        "--model", "lipconvnet_small", "--epochs", "1", "--limit-batches", "1",
        "--no-progress", "--shuffle", "none", "--activation", "spline",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 2
    assert "SplineConfig (spline) found nothing to convert in LipConvNet" in (
        capsys.readouterr().err
    )


def test_spelled_shuffle_reference():
    """The test model's shuffle is ShuffleNet's (the pass reads it as such)."""
    net = SpelledShuffle()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.b(F.channel_shuffle(net.a(x), 2)))
