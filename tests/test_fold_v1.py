"""Folding a frozen ShuffleNet v1 unit's permutations: the folded model computes what the trained
one does, with at most one gather between the pointwise convs, none where the learned groups are
contiguous, and ShuffleNet's own shuffle untouched where nothing was learned."""

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import shufflenet_v1
from autoshuffle_ext.models.fold_v1 import fold_unit_permutations_
from tests.references import randomize_structures_


def randomized(shuffle: str, pointwise: str, gates: str, seed: int = 0) -> nn.Module:
    """v1 g3 0.25x (CIFAR stem) with random BatchNorm statistics, random permutations as the
    learned shuffles, and random ("random") or contiguous ("leading": the start) gate patterns."""
    torch.manual_seed(seed)
    model = shufflenet_v1(3, 0.25, 10, "cifar", shuffle=shuffle, pointwise=pointwise)
    return randomize_structures_(model, gates=gates == "random")


def gathers(module: nn.Module) -> int:
    return sum(isinstance(m, asx.HardShuffle) for m in module.modules())


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shuffle", ["learned", "fixed", "none"])
def test_folded_model_computes_what_the_trained_one_does(shuffle, memory_format):
    model = randomized(shuffle, "learned", "random")
    frozen = asx.freeze(model)
    x = torch.randn(3, 3, 32, 32).to(memory_format=memory_format)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-6, atol=1e-6)
    # At most three gathers per unit (input, middle, output), against five before folding.
    units = [u for stage in frozen.stages for u in stage]
    assert all(gathers(u) <= 3 for u in units)
    assert all(isinstance(u.shuffle, nn.Identity) for u in units if gathers(u))


def test_contiguous_groups_keep_one_gather_per_unit_after_the_depthwise_conv():
    model = randomized("learned", "learned", "leading")
    frozen = asx.freeze(model)
    for stage in frozen.stages:
        for unit in stage:
            assert gathers(unit) == 1
            assert isinstance(unit.depthwise[-1], asx.HardShuffle)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-6, atol=1e-6)


def test_an_identity_composition_leaves_no_gather():
    frozen = asx.freeze(randomized("none", "learned", "leading"))
    assert gathers(frozen) == 0


def test_fixed_shuffle_with_fixed_groups_is_left_alone():
    model = randomized("fixed", "fixed", "leading")
    unit = model.stages[1][1]
    assert not fold_unit_permutations_(unit)
    assert isinstance(unit.shuffle, asx.FixedShuffle)
    assert gathers(asx.freeze(model)) == 0


def test_a_unit_whose_structures_are_not_frozen_is_left_alone():
    model = randomized("learned", "learned", "random")
    unit = model.stages[0][1]
    assert not fold_unit_permutations_(unit)
    assert isinstance(unit.shuffle, asx.LearnedShuffle)
