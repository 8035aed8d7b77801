"""GroupBudget, one budget over many DGConv2d layers: the weighted cost and its hinge, the
gradient each layer's gates get, ShuffleNet v1's model-wide budget (its weights are the measured
multiply-adds), freezing, copying, and the argument checks."""

import copy

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import shufflenet_v1


def layers_with_groups(groups_per_layer, channels=12):
    return [asx.DGConv2d(channels, channels, init_groups=g) for g in groups_per_layer]


def test_cost_is_the_share_weighted_sum_of_one_over_groups():
    layers = layers_with_groups([1, 2, 3, 12])
    weights = [1.0, 2.0, 3.0, 4.0]
    budget = asx.GroupBudget(layers, weights, budget=0.5)
    expected = sum(w / 10 / g for w, g in zip(weights, [1, 2, 3, 12], strict=True))
    assert budget.cost_fraction().item() == pytest.approx(expected, rel=1e-6)
    assert budget.report()["groups"] == [1, 2, 3, 12]


def test_hinge_is_zero_inside_and_pushes_each_layer_by_its_share_outside():
    layers = layers_with_groups([1, 1])
    inside = asx.GroupBudget(layers, [1.0, 3.0], budget=1.0)
    assert inside.penalty().item() == 0.0
    outside = asx.GroupBudget(layers, [1.0, 3.0], budget=0.5, penalty_weight=2.0)
    value = outside.penalty()
    assert value.item() == pytest.approx(2.0 * (1.0 - 0.5))
    value.backward()
    first, second = (layer.gates.grad for layer in layers)
    # Same factors, same (open) gates: the gradients differ only by the shares, 1/4 and 3/4.
    assert torch.all(first > 0)
    torch.testing.assert_close(second, 3 * first)


def test_the_budget_alone_splits_layers_until_the_cost_fits():
    layers = layers_with_groups([1, 1, 1])
    budget = asx.GroupBudget(layers, [1.0, 1.0, 2.0], budget=0.3, penalty_weight=1.0)
    optimizer = torch.optim.SGD([layer.gates for layer in layers], lr=1.0)
    for _ in range(20):
        optimizer.zero_grad()
        asx.penalty(budget).backward()
        optimizer.step()
    assert budget.cost_fraction().item() <= 0.3
    assert all(layer.num_groups() > 1 for layer in layers)


def test_v1_weights_are_the_dense_multiply_adds_of_each_pointwise_conv():
    model = shufflenet_v1(3, 0.25, 10, "cifar", pointwise="learned", budget=1.0)
    layers, weights = list(model.group_budget.layers), list(model.group_budget.shares)
    assert layers == [m for _, m in asx.structures(model, asx.DGConv2d)]
    # Measure: a dense 1x1 conv at the layer's input resolution costs in * out * H * W.
    areas = {}

    def hook(module, inputs, _output):
        areas[module] = inputs[0].shape[-2] * inputs[0].shape[-1]

    handles = [layer.register_forward_hook(hook) for layer in layers]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    measured = [layer.in_channels * layer.out_channels * areas[layer] for layer in layers]
    ratio = measured[0] / weights[0]
    torch.testing.assert_close(
        torch.tensor(measured, dtype=torch.float64),
        torch.tensor(weights, dtype=torch.float64) * ratio,
    )


def test_v1_start_costs_what_the_fixed_model_does():
    """The start is the fixed model's groups, so its cost fraction is the fixed model's pointwise
    multiply-adds over those of the same convs made dense, counted on the frozen models."""
    learned = shufflenet_v1(3, 0.5, 10, "cifar", pointwise="learned", budget=1.0)

    def pointwise_macs(model):
        total = 0

        def hook(module, _inputs, output):
            nonlocal total
            if module.kernel_size == (1, 1):
                total += output[0].numel() * module.in_channels // module.groups

        handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) is nn.Conv2d]
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 32, 32))
        for handle in handles:
            handle.remove()
        return total

    fixed = pointwise_macs(shufflenet_v1(3, 0.5, 10, "cifar"))
    dense = copy.deepcopy(learned)
    for _, layer in asx.structures(dense, asx.DGConv2d):
        layer.set_groups_(1)
    ratio = fixed / pointwise_macs(asx.freeze(dense))
    assert learned.group_budget.report()["cost"] == pytest.approx(ratio, rel=1e-6)


def test_v1_budget_is_one_structure_that_freezes_away_and_copies_with_its_layers():
    model = shufflenet_v1(3, 0.25, 10, "cifar", pointwise="learned", budget=0.2)
    rows = [r for r in asx.structure_report(model) if r["kind"] == "GroupBudget"]
    assert len(rows) == 1 and rows[0]["budget"] == 0.2 and rows[0]["penalty"] > 0
    assert not any("group_budget" in key for key in model.state_dict())
    # The budget is part of the model's penalty.
    layer_terms = sum(m.penalty() for _, m in asx.structures(model, asx.DGConv2d))
    assert asx.penalty(model).item() == pytest.approx(
        layer_terms.item() + model.group_budget.penalty().item(), abs=1e-6
    )
    twin = copy.deepcopy(model)
    twin_layers = [m for _, m in asx.structures(twin, asx.DGConv2d)]
    assert list(twin.group_budget.layers) == twin_layers
    frozen = asx.freeze(model)
    assert isinstance(frozen.group_budget, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(frozen.eval()(x), model(x), rtol=1e-5, atol=1e-5)


def test_model_budget_arguments_are_checked():
    with pytest.raises(ValueError, match="budget needs pointwise='learned'"):
        shufflenet_v1(3, 0.25, 10, "cifar", budget=0.3)
    with pytest.raises(ValueError, match="not both"):
        shufflenet_v1(
            3, 0.25, 10, "cifar", pointwise="learned", budget=0.3,
            pointwise_options={"budget": 0.3},
        )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (([], [], 0.5), ValueError, "at least one"),
        ((["conv"], [1.0], 0.5), TypeError, r"layers\[0\] must be a DGConv2d"),
        ((None, [1.0, 2.0], 0.5), ValueError, "one entry per layer"),
        ((None, [0.0], 0.5), ValueError, "positive and finite, got 0.0"),
        ((None, [float("nan")], 0.5), ValueError, "positive and finite"),
        ((None, [1.0], 0.0), ValueError, r"budget must lie in \(0, 1\], got 0.0"),
        ((None, [1.0], 1.5), ValueError, "budget must lie"),
    ],
)
def test_bad_arguments_are_refused(args, error, match):
    layers, weights, budget = args
    layers = layers_with_groups([1]) if layers is None else layers
    with pytest.raises(error, match=match):
        asx.GroupBudget(layers, weights, budget)
    with pytest.raises(ValueError, match="penalty_weight must be >= 0"):
        asx.GroupBudget(layers_with_groups([1]), [1.0], 0.5, penalty_weight=-1.0)
