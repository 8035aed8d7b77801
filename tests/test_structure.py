"""The `LearnedStructure` protocol: a structure written outside the package, deriving from the
base, is penalised, projected, frozen, reported and counted by the whole-model helpers with no
registration anywhere."""

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import count_parameters


class ChannelGain(asx.LearnedStructure):
    """A user's structure: per-channel gains trained toward {0, 1} (a learned channel mask),
    kept in [0, 1] after each step, frozen to a fixed 0/1 mask."""

    def __init__(self, channels: int, penalty_weight: float = 0.1) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((channels,), 0.5) + 0.3 * torch.rand(channels))
        self.penalty_weight = penalty_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.view(1, -1, 1, 1)

    def raw_penalty(self) -> torch.Tensor:
        return (self.gain * (1 - self.gain)).sum()

    def project_(self) -> None:
        with torch.no_grad():
            self.gain.clamp_(0.0, 1.0)

    def to_inference(self) -> nn.Module:
        return FixedMask((self.gain.detach() > 0.5).to(self.gain.dtype))

    def report(self) -> dict:
        return {
            "penalty": float(self.raw_penalty().detach()),
            "kept": int((self.gain > 0.5).sum()),
        }


class FixedMask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, 1, 1)


def user_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 1),
        ChannelGain(6),
        asx.LearnedShuffle(6, groups=3, penalty_weight=0.2),
        nn.Sequential(nn.Conv2d(6, 6, 1), ChannelGain(6, penalty_weight=0.3)),
    )


def test_helpers_find_a_user_structure_without_registration():
    model = user_model()
    names = [name for name, _ in asx.structures(model)]
    assert names == ["1", "2", "3.1"]

    x = torch.randn(2, 3, 4, 4)
    model(x)
    expected = model[1].penalty() + model[2].penalty() + model[3][1].penalty()
    torch.testing.assert_close(asx.penalty(model), expected)
    assert asx.penalty(model).requires_grad

    rows = asx.structure_report(model)
    assert [(r["name"], r["kind"]) for r in rows] == [
        ("1", "ChannelGain"), ("2", "LearnedShuffle"), ("3.1", "ChannelGain")
    ]  # fmt: skip
    assert rows[0]["kept"] == int((model[1].gain > 0.5).sum())
    assert [r["name"] for r in asx.shuffle_report(model)] == ["2"]

    network, structure = count_parameters(model)
    assert structure == 6 + 36 + 6
    assert network == sum(p.numel() for p in model.parameters()) - structure


def test_projection_reaches_a_user_structure_after_each_step():
    model = user_model()
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    asx.attach_projection(opt, model)
    loss = model(torch.randn(2, 3, 4, 4)).pow(2).sum() + asx.penalty(model)
    loss.backward()
    opt.step()
    for gain in (model[1].gain, model[3][1].gain):
        assert gain.min() >= 0 and gain.max() <= 1
        assert ((gain == 0) | (gain == 1)).any()  # the big step went past the box: clamped
    M = model[2].weight.detach()
    torch.testing.assert_close(M.sum(0), torch.ones(6), atol=1e-5, rtol=0)


def test_projection_refuses_an_optimizer_without_a_user_structure():
    model = user_model()
    params = [p for n, p in model.named_parameters() if not n.startswith("3.1")]
    with pytest.raises(ValueError, match=r"missing: 3\.1"):
        asx.attach_projection(torch.optim.SGD(params, lr=0.1), model)


def test_freeze_turns_every_structure_into_its_inference_module():
    model = user_model()
    frozen = asx.freeze(model)
    assert isinstance(frozen[1], FixedMask) and isinstance(frozen[3][1], FixedMask)
    assert isinstance(frozen[2], asx.HardShuffle)
    assert not list(asx.structures(frozen))
    assert isinstance(model[1], ChannelGain)  # the original keeps training
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        for gain in (model[1].gain, model[3][1].gain):
            gain.copy_((gain > 0.5).float())  # on the constraint's corners
        model[2].weight.copy_(asx.permutation_matrix(model[2].perm, torch.float32))
    torch.testing.assert_close(asx.freeze(model)(x), model(x))


def test_a_structure_nested_in_a_structure_is_replaced_once():
    class Outer(ChannelGain):
        def __init__(self) -> None:
            super().__init__(6)
            self.inner = ChannelGain(6)

    model = nn.Sequential(Outer())
    frozen = asx.freeze(model)
    assert isinstance(frozen[0], FixedMask)


def test_a_structure_must_say_what_it_becomes_for_inference():
    class Incomplete(asx.LearnedStructure):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="to_inference"):
        Incomplete()


def test_default_protocol_methods():
    class Plain(asx.LearnedStructure):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def to_inference(self) -> nn.Module:
            return nn.Identity()

    plain = Plain()
    assert plain.penalty().item() == 0.0
    plain.project_()  # no constraint: nothing happens
    assert torch.equal(plain.w, torch.ones(3))
    assert plain.report() == {"penalty": 0.0}
    assert list(plain.structure_parameters()) == [plain.w]


def test_the_base_weighs_the_raw_penalty_and_reports_it_unweighted():
    gain = ChannelGain(6, penalty_weight=0.25)
    raw = (gain.gain * (1 - gain.gain)).sum()
    torch.testing.assert_close(gain.raw_penalty(), raw)
    torch.testing.assert_close(gain.penalty(), 0.25 * raw)
    assert gain.report()["penalty"] == pytest.approx(float(raw.detach()))


class FusedGain(ChannelGain):
    """A structure whose forward computes its penalty on the way (as a fused op would)."""

    calls = 0

    def raw_penalty(self) -> torch.Tensor:
        FusedGain.calls += 1
        return super().raw_penalty()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.remember_penalty(super().raw_penalty() * 1.0)
        return super().forward(x)


def test_the_base_reuses_the_forward_penalty_until_a_parameter_changes():
    gain = FusedGain(6)
    gain(torch.randn(1, 6, 2, 2))
    FusedGain.calls = 0
    first = gain.penalty()
    assert FusedGain.calls == 0  # the forward's value
    torch.testing.assert_close(first, gain.penalty_weight * gain.raw_penalty())
    with torch.no_grad():
        gain.gain.add_(0.1)  # an optimizer step: the remembered value is stale
    FusedGain.calls = 0
    gain.penalty()
    assert FusedGain.calls == 1
    with torch.no_grad():
        gain(torch.randn(1, 6, 2, 2))  # no gradient: nothing to reuse
    FusedGain.calls = 0
    gain.penalty()
    assert FusedGain.calls == 1
    gain(torch.randn(1, 6, 2, 2))
    import copy

    assert copy.deepcopy(gain)._forward_penalty is None  # a copy starts without it


def test_param_group_hints_name_each_structures_own_parameters():
    plain_gain = ChannelGain(4)
    [group] = plain_gain.param_groups()
    assert group.name == "structure" and group.params == (plain_gain.gain,)
    assert group.lr is None and group.weight_decay == 0.0
    shuffle = asx.LearnedShuffle(8, 2)
    shuffle.lr = 0.5
    assert [(g.name, g.params, g.lr) for g in shuffle.param_groups()] == [
        ("shuffle", (shuffle.weight,), 0.5)
    ]
    conv = asx.DGConv2d(8, 8, 1, init_groups=2)
    assert [(g.name, g.params) for g in conv.param_groups()] == [("gate", (conv.gates,))]
    assert list(conv.structure_parameters()) == [conv.gates]


def test_count_macs_asks_each_structure_for_its_cost():
    from autoshuffle_ext.models import count_macs

    class Costly(ChannelGain):
        def macs(self, inputs, output):
            return 1000, 10

    model = nn.Sequential(nn.Conv2d(3, 6, 1), Costly(6), asx.LearnedShuffle(6, 3))
    inference, training = count_macs(model, (3, 4, 4))
    conv = 16 * 6 * 3
    assert inference == conv + 10 + 0  # a learned shuffle is a gather at inference
    assert training == (1000 - 10) + 16 * 6 * 6  # and a 6 x 6 mixing per pixel in training
    # A structure that does not count itself has its children counted.
    wrapped = nn.Sequential(ChannelGain(3), nn.Conv2d(3, 6, 1))
    assert count_macs(wrapped, (3, 4, 4)) == (conv, 0)


def test_freeze_folds_foldable_blocks_and_drops_regularizers():
    class Block(nn.Sequential, asx.Foldable):
        folded = 0

        def fold_frozen_(self) -> None:
            Block.folded += 1

    class Budget(asx.Regularizer):
        def __init__(self, layers) -> None:
            super().__init__()
            self.layers = tuple(layers)
            self.penalty_weight = 2.0

        def raw_penalty(self) -> torch.Tensor:
            return sum(layer.raw_penalty() for layer in self.layers)

    model = nn.Sequential(Block(ChannelGain(3)), Block(Block(ChannelGain(3))))
    model.budget = Budget([model[0][0], model[1][0][0]])
    torch.testing.assert_close(
        asx.penalty(model), 2 * model.budget.raw_penalty() + 0.1 * model.budget.raw_penalty()
    )
    frozen = asx.freeze(model)
    assert Block.folded == 3
    assert isinstance(frozen.budget, nn.Identity)
    assert not list(asx.structures(frozen))


def test_the_forward_penalty_is_dropped_when_the_parameters_are_replaced():
    gain = FusedGain(6)
    gain(torch.randn(1, 6, 2, 2))
    gain.to(torch.float64)  # new parameter tensors (their versions start at 0 again)
    FusedGain.calls = 0
    assert gain.penalty().dtype == torch.float64 and FusedGain.calls == 1
    gain(torch.randn(1, 6, 2, 2, dtype=torch.float64))
    gain.load_state_dict({"gain": torch.full((6,), 0.5, dtype=torch.float64)})
    FusedGain.calls = 0
    torch.testing.assert_close(gain.penalty(), torch.tensor(0.1 * 1.5, dtype=torch.float64))
    assert FusedGain.calls == 1


def test_count_macs_counts_a_structure_inside_one_that_counts_itself_once():
    from autoshuffle_ext.models import count_macs

    class Wrapper(ChannelGain):
        def __init__(self) -> None:
            super().__init__(6)
            self.inner = asx.LearnedShuffle(6, 3)

        def forward(self, x):
            return self.inner(super().forward(x))

        def macs(self, inputs, output):
            return 1000, 10

    assert count_macs(nn.Sequential(Wrapper()), (6, 4, 4)) == (10, 990)
