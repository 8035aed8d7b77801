"""DGConv2d's gate_init and GroupBudget's weights and budget at the edges of their ranges
(issue 20): refused with a clear error, or computed without overflow; never a silent inf."""

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.train.cli import main


@pytest.mark.parametrize(
    ("gate_init", "dtype", "match"),
    [
        (1e39, None, r"gate_init must be at most 3.40282e\+38 \(the largest torch.float32 of the "
         r"gates\), got 1e\+39"),
        (7e4, torch.float16, r"gate_init must be at most 65504 \(the largest torch.float16 of the "
         r"gates\), got 70000"),
    ],
)  # fmt: skip
def test_gate_init_must_fit_the_gates_dtype(gate_init, dtype, match):
    with pytest.raises(ValueError, match=match):
        asx.DGConv2d(12, 24, gate_init=gate_init, dtype=dtype)


def test_largest_representable_gate_init_trains_finitely():
    conv = asx.DGConv2d(12, 24, gate_init=1e38, init_groups=3, budget=0.5)
    x = torch.randn(2, 12, 4, 4)
    loss = conv(x).square().mean() + conv.penalty()
    loss.backward()
    assert torch.isfinite(conv.gates).all() and torch.isfinite(loss)
    assert torch.isfinite(conv.gates.grad).all() and torch.isfinite(conv.weight.grad).all()
    assert conv.num_groups() == 3


def test_set_groups_refuses_a_gate_init_the_dtype_cannot_hold():
    conv = asx.DGConv2d(12, 24, gate_init=1e5).half()
    with pytest.raises(ValueError, match="gate_init must be at most 65504"):
        conv.set_groups_(2)


def test_cli_gate_init_above_float32_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--groups", "learned", "--gate-init", "1e39", "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--gate-init must be at most 3.40282e+38 (the gates are float32), got 1e+39" in err
    assert "try a lower --lr" not in err


def _layers(groups):
    return [asx.DGConv2d(12, 12, init_groups=g) for g in groups]


def test_huge_weights_keep_their_shares():
    layers = _layers([1, 2])
    budget = asx.GroupBudget(layers, [1e308, 1e308], budget=0.5)
    assert budget.shares == (0.5, 0.5)
    assert budget.cost_fraction().item() == pytest.approx(0.75)
    assert budget.penalty().item() == pytest.approx(0.25 * budget.penalty_weight)
    uneven = asx.GroupBudget(layers, [1e308, 3e307], budget=0.5)
    assert uneven.shares == pytest.approx((1 / 1.3, 0.3 / 1.3))
    assert sum(uneven.shares) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": torch.tensor(0.5)}, r"budget must be a real number, got Tensor tensor\(0.5"),
        ({"budget": True}, "budget must be a real number, got bool True"),
        ({"budget": "half"}, "budget must be a real number, got str 'half'"),
        ({"budget": 0.5, "penalty_weight": True}, "penalty_weight must be a real number, got bool"),
        (
            {"budget": 0.5, "penalty_weight": torch.tensor(1.0)},
            "penalty_weight must be a real number, got Tensor",
        ),
    ],
)
def test_budget_and_weight_must_be_real_numbers(kwargs, match):
    with pytest.raises(TypeError, match=match):
        asx.GroupBudget(_layers([1]), [1.0], **kwargs)
