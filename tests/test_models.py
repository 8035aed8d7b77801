"""ShuffleNet v1/v2 models: published sizes and costs, shapes of every variant, the shuffle at the
right place (a learned shuffle started on the fixed permutation computes the fixed model), names,
and a few training steps that lower the loss."""

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import (
    MODEL_NAMES,
    build_model,
    count_macs,
    count_parameters,
    measure,
    model_name,
    parse_model_name,
    shufflenet_v1,
    shufflenet_v2,
    v1_channels,
)
from autoshuffle_ext.models.__main__ import main as models_main

SHUFFLES = asx.modules.SHUFFLE_KINDS

# torchvision's published parameter counts of shufflenet_v2_x{0_5,1_0,1_5,2_0}.
TORCHVISION_V2_PARAMS = {0.5: 1_366_792, 1.0: 2_278_604, 1.5: 3_503_624, 2.0: 7_393_996}


@pytest.mark.parametrize("width", sorted(TORCHVISION_V2_PARAMS))
def test_v2_parameter_counts_equal_torchvision(width):
    model = shufflenet_v2(width)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_V2_PARAMS[width]


@pytest.mark.parametrize(
    ("build", "published_mflops"),
    [
        (lambda: shufflenet_v1(3, 1.0), 140),  # ShuffleNet 1x (g = 3), paper Table 2
        (lambda: shufflenet_v1(8, 1.0), 140),
        (lambda: shufflenet_v1(1, 1.0), 140),
        (lambda: shufflenet_v1(3, 0.5), 38),  # ShuffleNet 0.5x (g = 3)
        (lambda: shufflenet_v2(1.0), 146),  # ShuffleNet v2 1x, paper Table 5
        (lambda: shufflenet_v2(0.5), 41),
        (lambda: shufflenet_v2(2.0), 591),
    ],
)
def test_flops_within_five_percent_of_published(build, published_mflops):
    macs, mixing = count_macs(build(), (3, 224, 224))
    assert mixing == 0
    assert abs(macs / 1e6 - published_mflops) <= 0.05 * published_mflops


def test_v1_paper_channels_and_first_pointwise_not_grouped():
    assert v1_channels(3, 1.0) == (24, (240, 480, 960))
    assert v1_channels(8, 1.0) == (24, (384, 768, 1536))
    model = shufflenet_v1(3)
    first, second = model.stages[0][0], model.stages[0][1]
    assert first.compress[0].groups == 1 and first.compress[0].in_channels == 24
    assert second.compress[0].groups == 3
    assert first.expand[0].out_channels == 240 - 24  # concatenated with the pooled input


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.5, 2.0])
def test_v1_widths_give_valid_group_splits(groups, width):
    stem, (c2, c3, c4) = v1_channels(groups, width)
    assert (c3, c4) == (2 * c2, 4 * c2)
    assert c2 % (4 * groups) == 0 and (c2 - stem) % groups == 0 and stem > 0


def test_learned_shuffle_parameters_are_counted_apart():
    model = shufflenet_v1(3, 0.5, stem="cifar", shuffle="learned")
    params, extra = count_parameters(model)
    fixed_params, fixed_extra = count_parameters(shufflenet_v1(3, 0.5))
    assert (params, fixed_extra) == (fixed_params, 0)
    sizes = [m.num_channels for m in model.modules() if isinstance(m, asx.LearnedShuffle)]
    assert len(sizes) == 16 and extra == sum(c * c for c in sizes)
    # C x C per pixel, at the resolution entering each unit (its first unit before the stride).
    mixing = 30**2 * (32**2 + 3 * 16**2) + 60**2 * (16**2 + 7 * 8**2) + 120**2 * (8**2 + 3 * 4**2)
    assert measure(model, (3, 32, 32)).shuffle_macs == mixing


def _variants():
    models = [f"shufflenet_v1_g{g}_x0_5" for g in (1, 2, 3, 4, 8)] + list(MODEL_NAMES[-4:])
    return [(m, s) for m in models for s in SHUFFLES]


@pytest.mark.parametrize(("name", "shuffle"), _variants())
def test_output_shapes_of_every_variant_and_both_stems(name, shuffle):
    torch.manual_seed(0)
    for stem, side in (("cifar", 32), ("imagenet", 64)):
        model = build_model(name, num_classes=7, stem=stem, structures=[asx.ShuffleConfig(shuffle)])
        x = torch.randn(2, 3, side, side)
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
        if shuffle in ("learned", "sinkhorn"):
            frozen = asx.freeze(model.eval())
            assert frozen(x).shape == (2, 7)


@pytest.mark.parametrize(
    "build",
    [
        lambda s, o: shufflenet_v1(3, 0.5, 10, "cifar", s, o),
        lambda s, o: shufflenet_v2(0.5, 10, "cifar", s, o),
    ],
)
def test_learned_shuffle_on_the_fixed_permutation_computes_the_fixed_model(build):
    """The learned shuffle stands exactly where the fixed one does: started on the fixed
    permutation (no blend, no noise), the soft and the frozen models equal the fixed model."""
    torch.manual_seed(0)
    fixed = build("fixed", None).eval()
    learned = build("learned", {"blend": 0.0, "noise": 0.0}).eval()
    missing, unexpected = learned.load_state_dict(fixed.state_dict(), strict=False)
    assert not unexpected and all(k.endswith("shuffle.weight") for k in missing)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = fixed(x)
        torch.testing.assert_close(learned(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(asx.freeze(learned)(x), expected, atol=0, rtol=0)


def test_group_count_one_has_no_shuffle():
    model = shufflenet_v1(1, 0.5, shuffle="learned")
    assert not any(isinstance(m, asx.LearnedShuffle) for m in model.modules())


@pytest.mark.parametrize("shuffle", ["fixed", "learned", "sinkhorn"])
def test_a_few_training_steps_lower_the_loss(shuffle):
    torch.manual_seed(0)
    # Half-way between the fixed shuffle and uniform: 12 steps on 16 images test that every kind
    # trains, and a near-uniform start (the default) spends its first steps finding its mixing.
    options = None if shuffle == "fixed" else {"blend": 0.5}
    model = shufflenet_v1(
        3, 0.25, num_classes=4, stem="cifar", shuffle=shuffle, shuffle_options=options
    )
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    asx.attach_projection(optimizer, model)
    losses = []
    for _ in range(12):
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        (loss + 0.01 * asx.penalty(model)).backward()
        optimizer.step()
    assert losses[-1] < 0.25 * losses[0]
    for _, module in asx.structures(model, asx.LearnedShuffle):
        M = module.weight.detach()
        assert (M >= 0).all()
        # Doubly stochastic within 1e-4, also for the 40-70% zero 60 x 60 matrices of the last
        # stage here, on which alternating projections used to stall at ~2e-3.
        torch.testing.assert_close(M.sum(0), torch.ones(len(M)), atol=1e-4, rtol=0)
        torch.testing.assert_close(M.sum(1), torch.ones(len(M)), atol=1e-4, rtol=0)


def test_model_names_round_trip_and_unknown_names_are_rejected():
    for name in MODEL_NAMES:
        version, width, groups = parse_model_name(name)
        assert model_name(version, width, groups) == name
    assert parse_model_name("shufflenet_v1_g8_x0_25") == ("v1", 0.25, 8)
    for bad in ("resnet18", "shufflenet_v2", "shufflenet_v1_x1_0", "shufflenet_v2_g3_x1_0"):
        with pytest.raises(ValueError, match="unknown model"):
            parse_model_name(bad)
    with pytest.raises(ValueError, match="groups must be one of"):
        build_model("shufflenet_v1_g5")
    with pytest.raises(ValueError, match="width_mult must be one of"):
        build_model("shufflenet_v2_x0_7")
    with pytest.raises(ValueError, match="width_mult must lie in"):
        shufflenet_v1(3, 3.0)
    with pytest.raises(ValueError, match="stem must be one of"):
        shufflenet_v2(1.0, stem="tiny")
    with pytest.raises(ValueError, match="shuffle must be one of"):
        shufflenet_v2(1.0, shuffle="shiny")


def test_models_command_prints_params_and_flops(capsys):
    models_main(["shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"])
    out = capsys.readouterr().out
    assert "| shufflenet_v2_x0_5 | 1,366,792 | 230,400 | 40.5 |" in out
    assert "| shufflenet_v1_g3_x0_5 |" in out


def test_frozen_model_exports_with_its_gathers():
    # Deployment path: train soft, freeze to exact gathers, export the inference graph.
    torch.manual_seed(0)
    model = shufflenet_v2(0.5, num_classes=10, stem="cifar", shuffle="learned").eval()
    frozen = asx.freeze(model).eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(frozen, (x,))
    # Every v2 unit concatenates and shuffles in one cat_gather (no separate cat, no gather).
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    gathers = targets.count(torch.ops.autoshuffle_ext.cat_gather.default)
    assert gathers == sum(isinstance(m, asx.HardShuffle) for m in frozen.modules()) > 0
    assert torch.ops.autoshuffle_ext.channel_gather.default not in targets
    assert torch.ops.aten.cat.default not in targets
    torch.testing.assert_close(program.module()(x), frozen(x), atol=0, rtol=0)


def _learned_pointwise_names(model: nn.Module) -> list[str]:
    return [name for name, _ in asx.structures(model, asx.DGConv2d)]


def test_learned_pointwise_convs_start_on_the_fixed_group_counts():
    fixed = shufflenet_v1(3, 0.5, 10, "cifar")
    learned = shufflenet_v1(3, 0.5, 10, "cifar", pointwise="learned")
    names = _learned_pointwise_names(learned)
    assert len(names) == 2 * 16  # both pointwise convs of every unit
    for name in names:
        conv, dg = fixed.get_submodule(name), learned.get_submodule(name)
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
        assert (dg.in_channels, dg.out_channels) == (conv.in_channels, conv.out_channels)
        assert dg.num_groups() == conv.groups
        assert dg.budget is None
    assert learned.get_submodule("stages.0.0.compress.0").num_groups() == 1  # kept dense
    # The default is the fixed model, parameter for parameter.
    assert count_parameters(shufflenet_v1(3, 0.5, 10, "cifar", pointwise="fixed")) == (
        count_parameters(fixed)
    )
    options = {"budget": 0.25, "penalty_weight": 2.0, "init_groups": 1}
    dense = shufflenet_v1(3, 0.5, 10, "cifar", pointwise="learned", pointwise_options=options)
    assert all(dense.get_submodule(n).num_groups() == 1 for n in _learned_pointwise_names(dense))
    assert all(dense.get_submodule(n).budget == 0.25 for n in _learned_pointwise_names(dense))


def test_learned_pointwise_with_the_fixed_weights_computes_the_fixed_model():
    """Started on the fixed groups, a DGConv2d is the contiguous grouped conv: given the fixed
    model's weights (as dense weights, zero outside the groups), the learned model computes the
    fixed one, and its frozen form is the fixed model's own convs."""
    torch.manual_seed(0)
    fixed = shufflenet_v1(3, 0.5, 10, "cifar").eval()
    learned = shufflenet_v1(3, 0.5, 10, "cifar", pointwise="learned").eval()
    state = learned.state_dict() | fixed.state_dict()
    for name in _learned_pointwise_names(learned):
        conv = fixed.get_submodule(name)
        blocks = conv.weight[:, :, 0, 0].chunk(conv.groups)  # [out / g, in / g] each
        state[name + ".weight"] = torch.block_diag(*blocks)[:, :, None, None]
    learned.load_state_dict(state)
    frozen = asx.freeze(learned)
    assert not any(isinstance(m, asx.HardShuffle) for m in frozen.modules())
    assert count_parameters(frozen) == count_parameters(fixed)
    assert count_macs(frozen, (3, 32, 32)) == count_macs(fixed, (3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = fixed(x)
        torch.testing.assert_close(learned(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(frozen(x), expected, atol=0, rtol=0)


def test_learned_pointwise_training_steps_close_gates_under_a_budget():
    torch.manual_seed(0)
    options = {"budget": 0.1, "penalty_weight": 5.0}
    model = shufflenet_v1(3, 0.25, 4, "cifar", pointwise="learned", pointwise_options=options)
    gates = [m.gates for _, m in asx.structures(model, asx.DGConv2d)]
    network = [p for p in model.parameters() if all(p is not g for g in gates)]
    optimizer = torch.optim.SGD([{"params": network}, {"params": gates, "lr": 1.0}], lr=0.02)
    asx.attach_projection(optimizer, model)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))
    start = [m.num_groups() for _, m in asx.structures(model, asx.DGConv2d)]
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(x), y) + asx.penalty(model)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = [m.num_groups() for _, m in asx.structures(model, asx.DGConv2d)]
    assert sum(e > s for s, e in zip(start, end, strict=True)) >= len(start) // 2
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(asx.freeze(model)(x), model(x), atol=1e-5, rtol=1e-5)


def test_unknown_pointwise_kind_is_refused():
    with pytest.raises(
        ValueError, match=r"pointwise must be one of \('fixed', 'learned'\), got 'soft'"
    ):
        shufflenet_v1(3, 0.5, pointwise="soft")
    with pytest.raises(TypeError, match="unexpected keyword argument 'budgett'"):
        shufflenet_v1(3, 0.5, pointwise="learned", pointwise_options={"budgett": 0.5})


def test_learned_groups_start_at_the_fixed_models_cost_and_are_listed(capsys):
    shuffle, groups = asx.ShuffleConfig("learned"), asx.GroupsConfig("learned")
    fixed = build_model("shufflenet_v1_g3_x0_5", 10, "cifar", [shuffle])
    learned = build_model("shufflenet_v1_g3_x0_5", 10, "cifar", [shuffle, groups])
    a, b = measure(fixed, (3, 32, 32)), measure(learned, (3, 32, 32))
    assert (b.params, b.macs, b.shuffle_macs) == (a.params, a.macs, a.shuffle_macs)
    assert b.shuffle_params > a.shuffle_params  # the gates train on top
    models_main(["shufflenet_v1_g3_x0_5", "--stem", "cifar", "--groups", "learned"])
    out = capsys.readouterr().out
    assert "pointwise groups, in order | 1 3 3 3" in out
    assert "pointwise cost / dense (matching --budget) | 0.3416 |" in out
