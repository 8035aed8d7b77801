"""DGConv2d, the learned group count: the mask against the explicit Kronecker product, the grouped
forward and its backward against the plain masked dense conv (the reference), the frozen grouped
conv, the budget term, the whole-model helpers, export, and the argument checks."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import count_parameters
from autoshuffle_ext.modules.dgconv_mask import gate_factors, prime_factors

# (in_channels, out_channels): powers of two and mixed radix, in == out and in != out.
SHAPES = [(8, 8), (12, 12), (30, 30), (12, 24), (24, 12), (16, 8), (20, 30)]


def straight_through(gates: torch.Tensor) -> torch.Tensor:
    """g = [gates >= 0] in the forward, d g / d gates = 1 in the backward."""
    # (gates - gates.detach()) is exactly 0, so g is exactly 0 or 1; (hard + gates) - gates is not.
    return (gates >= 0).to(gates.dtype) + (gates - gates.detach())


def reference_relationship(g: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """U = U_1 (x) ... (x) U_K by explicit Kronecker products, U_k = g_k J + (1 - g_k) I."""
    u = torch.ones(1, 1, dtype=g.dtype)
    for gk, n in zip(g, factors, strict=True):
        u = torch.kron(
            u, gk * torch.ones(n, n, dtype=g.dtype) + (1 - gk) * torch.eye(n, dtype=g.dtype)
        )
    return u


def reference_mask(g: torch.Tensor, factors: tuple[int, ...], out: int, cin: int) -> torch.Tensor:
    u = reference_relationship(g, factors)
    blocks = u.shape[0]
    return u.repeat_interleave(out // blocks, 0).repeat_interleave(cin // blocks, 1)


def reference_dgconv2d(module: asx.DGConv2d, x: torch.Tensor) -> torch.Tensor:
    """The plain masked dense conv: conv2d(x, weight * mask) with the straight-through gates."""
    g = straight_through(module.gates).to(module.weight.dtype)
    mask = reference_mask(g, module.factors, module.out_channels, module.in_channels)
    weight = module.weight * mask[:, :, None, None]
    return F.conv2d(x, weight, module.bias, module.stride, module.padding, module.dilation)


def set_gates(module: asx.DGConv2d, closed, generator: torch.Generator) -> None:
    """Gate parameters with random magnitudes in [0.1, 1] and the signs of `closed`."""
    magnitude = 0.1 + 0.9 * torch.rand(len(closed), generator=generator, dtype=torch.float64)
    signs = torch.tensor([-1.0 if c else 1.0 for c in closed], dtype=torch.float64)
    with torch.no_grad():
        module.gates.copy_(signs * magnitude)


def patterns(factors):
    return list(itertools.product([False, True], repeat=len(factors)))


def expected_groups(closed, factors) -> int:
    return math.prod(n for n, c in zip(factors, closed, strict=True) if c)


def test_prime_factors_and_gate_order():
    assert prime_factors(1) == ()
    assert prime_factors(240) == (2, 2, 2, 2, 3, 5)
    assert prime_factors(116) == (2, 2, 29)
    assert gate_factors(240, 60) == (2, 2, 3, 5)
    assert gate_factors(240, 60, 3) == (3, 2, 2, 5)  # the start's factors lead
    assert gate_factors(60, 216, 6) == (2, 3, 2)
    assert gate_factors(7, 5) == ()


@pytest.mark.parametrize("channels", [2, 8, 16])
def test_power_of_two_mask_is_the_papers_kronecker_product(channels):
    module = asx.DGConv2d(channels, channels).double()
    assert module.factors == (2,) * int(math.log2(channels))
    gen = torch.Generator().manual_seed(channels)
    for closed in patterns(module.factors):
        set_gates(module, closed, gen)
        g = torch.tensor([0.0 if c else 1.0 for c in closed], dtype=torch.float64)
        paper = torch.ones(1, 1, dtype=torch.float64)
        for gk in g:  # U_k = g_k * ones(2, 2) + (1 - g_k) * I_2
            paper = torch.kron(
                paper, gk * torch.ones(2, 2).double() + (1 - gk) * torch.eye(2).double()
            )
        u = module.relationship_matrix()
        assert torch.equal(u, paper)
        k, open_gates = len(closed), len(closed) - sum(closed)
        assert int(u.count_nonzero()) == 2 ** (k + open_gates)
        assert module.num_groups() == 2 ** (k - open_gates)


@pytest.mark.parametrize(("cin", "out"), SHAPES)
def test_every_gate_pattern_masked_dense_equals_grouped_and_frozen(cin, out):
    torch.manual_seed(cin * 100 + out)
    module = asx.DGConv2d(cin, out, 3, stride=2, padding=1, bias=True)
    gen = torch.Generator().manual_seed(1)
    blocks = math.gcd(cin, out)
    x = torch.randn(3, cin, 7, 6)
    for closed in patterns(module.factors):
        set_gates(module, closed, gen)
        groups = expected_groups(closed, module.factors)
        g = straight_through(module.gates)
        u = module.relationship_matrix()
        assert torch.equal(u, reference_relationship(g, module.factors))
        mask = module.mask()
        assert torch.equal(mask, reference_mask(g, module.factors, out, cin))
        assert int(u.count_nonzero()) == blocks * blocks // groups
        assert int(mask.count_nonzero()) == out * cin // groups
        assert module.num_groups() == groups
        assert module.cost_fraction().item() == pytest.approx(1 / groups, rel=1e-6)

        expected = reference_dgconv2d(module, x)
        torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
        frozen = module.to_inference()
        convs = [m for m in frozen.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 1 and convs[0].groups == groups
        assert convs[0].weight.numel() == out * cin * 9 // groups
        with torch.no_grad():
            torch.testing.assert_close(frozen(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("cin", "out"), [(12, 24), (24, 12), (30, 30), (8, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_backward_equals_the_masked_dense_conv_in_float64(cin, out, channels_last):
    """Forward, input, weight, bias and gate gradients of the fast path against the reference."""
    torch.manual_seed(0)
    module = asx.DGConv2d(cin, out, 3, stride=(1, 2), padding=(1, 0), bias=True).double()
    gen = torch.Generator().manual_seed(2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for closed in patterns(module.factors):
        set_gates(module, closed, gen)
        x = torch.randn(2, cin, 6, 7, dtype=torch.float64).contiguous(memory_format=fmt)
        x.requires_grad_(True)
        grad_y = torch.randn_like(reference_dgconv2d(module, x))
        params = [x, module.weight, module.bias, module.gates]

        y = module(x)
        got = torch.autograd.grad(y, params, grad_y)
        y_ref = reference_dgconv2d(module, x)
        expected = torch.autograd.grad(y_ref, params, grad_y)
        torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
        for name, a, b in zip(("x", "weight", "bias", "gates"), got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=name)
        if channels_last:
            assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("cin", "out"), [(12, 24), (30, 30)])
def test_without_gate_gradient_the_weight_gradient_is_the_grouped_one(cin, out):
    torch.manual_seed(0)
    module = asx.DGConv2d(cin, out, 1, dilation=2, bias=True).double()
    module.gates.requires_grad_(False)
    gen = torch.Generator().manual_seed(3)
    for closed in patterns(module.factors):
        set_gates(module, closed, gen)
        x = torch.randn(2, cin, 5, 4, dtype=torch.float64, requires_grad=True)
        grad_y = torch.randn(2, out, 5, 4, dtype=torch.float64)
        params = [x, module.weight, module.bias]
        got = torch.autograd.grad(module(x), params, grad_y)
        expected = torch.autograd.grad(reference_dgconv2d(module, x), params, grad_y)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_straight_through_gradient_reaches_every_gate():
    torch.manual_seed(0)
    module = asx.DGConv2d(12, 24, 1)
    gen = torch.Generator().manual_seed(4)
    set_gates(module, (True, False, True), gen)
    x = torch.randn(4, 12, 5, 5)
    module(x).pow(2).sum().backward()
    grad = module.gates.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad != 0).all()  # closed gates too: through the dense weight gradient


def test_budget_term_is_zero_inside_the_budget_and_differentiable_outside():
    module = asx.DGConv2d(12, 12, budget=0.25, penalty_weight=2.0).double()
    gen = torch.Generator().manual_seed(5)
    for closed in patterns(module.factors):
        set_gates(module, closed, gen)
        module.gates.grad = None
        groups = expected_groups(closed, module.factors)
        p = module.penalty()
        assert p.shape == ()
        cost = 1 / groups
        assert p.item() == pytest.approx(2.0 * max(0.0, cost - 0.25), abs=1e-12)
        p.backward()
        if cost <= 0.25:
            assert torch.equal(module.gates.grad, torch.zeros(3, dtype=torch.float64))
        else:  # d cost / d g_k = cost * (n_k - 1) / (1 + g_k (n_k - 1))
            g = torch.tensor([0.0 if c else 1.0 for c in closed], dtype=torch.float64)
            n = torch.tensor(module.factors, dtype=torch.float64)
            expected = 2.0 * cost * (n - 1) / (1 + g * (n - 1))
            torch.testing.assert_close(module.gates.grad, expected, atol=1e-12, rtol=1e-12)
        assert module.report()["penalty"] == pytest.approx(max(0.0, cost - 0.25))
    assert asx.DGConv2d(12, 12).penalty().item() == 0.0  # no budget, no term


def test_the_budget_alone_closes_gates_until_the_cost_fits():
    module = asx.DGConv2d(16, 16, budget=0.25, penalty_weight=1.0)
    assert module.num_groups() == 1  # dense start
    optimizer = torch.optim.SGD(module.structure_parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        module.penalty().backward()
        optimizer.step()
    assert module.cost_fraction().item() <= 0.25
    assert module.num_groups() >= 4


def test_init_groups_starts_on_the_contiguous_grouped_conv():
    torch.manual_seed(0)
    module = asx.DGConv2d(240, 60, init_groups=3)
    assert module.factors == (3, 2, 2, 5) and module.num_groups() == 3
    frozen = module.to_inference()
    assert isinstance(frozen, nn.Conv2d) and frozen.groups == 3  # no permutation
    x = torch.randn(2, 240, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), reference_dgconv2d(module, x), atol=1e-5, rtol=0)
    module.set_groups_(20)
    assert module.num_groups() == 20
    assert module.report()["gates"] == [1, 0, 0, 0]


def test_a_layer_without_a_common_factor_is_a_dense_conv():
    torch.manual_seed(0)
    module = asx.DGConv2d(3, 8, 3, padding=1)
    assert module.factors == () and module.gates.numel() == 0 and module.num_groups() == 1
    x = torch.randn(2, 3, 5, 5)
    expected = F.conv2d(x, module.weight, padding=1)
    torch.testing.assert_close(module(x), expected, atol=1e-6, rtol=0)
    assert isinstance(module.to_inference(), nn.Conv2d)
    assert module.cost_fraction().item() == 1.0


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1),
        asx.DGConv2d(12, 24, budget=0.5, penalty_weight=0.3),
        nn.ReLU(),
        asx.LearnedShuffle(24, groups=3, penalty_weight=0.2),
        nn.Sequential(asx.DGConv2d(24, 12, 3, padding=1, bias=True, init_groups=6, budget=0.1)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


def test_whole_model_helpers_handle_dgconv_without_registration():
    model = small_model()
    names = [name for name, _ in asx.structures(model)]
    assert names == ["1", "3", "4.0"]
    x = torch.randn(2, 3, 6, 6)
    model(x)
    expected = model[1].penalty() + model[3].penalty() + model[4][0].penalty()
    torch.testing.assert_close(asx.penalty(model), expected)
    assert model[1].penalty().item() == pytest.approx(0.3 * 0.5)  # dense: cost 1, budget 0.5
    assert asx.penalty(model).requires_grad

    rows = asx.structure_report(model)
    assert [(r["name"], r["kind"]) for r in rows] == [
        ("1", "DGConv2d"), ("3", "LearnedShuffle"), ("4.0", "DGConv2d")
    ]  # fmt: skip
    assert rows[2] | {"cost": None} == {
        "name": "4.0",
        "kind": "DGConv2d",
        "groups": 6,
        "cost": None,
        "budget": 0.1,
        "gates": [0, 0, 1],
        "factors": [2, 3, 2],
        "penalty": pytest.approx(1 / 6 - 0.1),
        "distance": 0.0,
    }

    _, structure = count_parameters(model)
    assert structure == 3 + 24 * 24 + 3  # the gates, apart from the network

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = asx.attach_projection(optimizer, model)
    loss = model(x).sum() + asx.penalty(model)
    loss.backward()
    optimizer.step()  # DGConv2d has no constraint: its projection is nothing
    handle.remove()
    params = [p for n, p in model.named_parameters() if n != "4.0.gates"]
    with pytest.raises(ValueError, match=r"missing: 4\.0"):
        asx.attach_projection(torch.optim.SGD(params, lr=0.1), model)


def test_freeze_gives_the_grouped_convs_and_computes_the_same():
    model = small_model().eval()
    gen = torch.Generator().manual_seed(6)
    set_gates(model[1], (False, True, False), gen)  # 2 groups, permuted
    with torch.no_grad():
        perm = torch.randperm(24, generator=gen)
        model[3].weight.copy_(asx.permutation_matrix(perm))
    frozen = asx.freeze(model)
    assert not list(asx.structures(frozen))
    assert isinstance(frozen[1], nn.Sequential)
    assert [type(m) for m in frozen[1]] == [asx.HardShuffle, nn.Conv2d, asx.HardShuffle]
    assert isinstance(frozen[4][0], nn.Conv2d) and frozen[4][0].groups == 6
    assert isinstance(model[1], asx.DGConv2d)  # the original keeps training
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), atol=1e-5, rtol=1e-5)


def test_frozen_model_exports():
    model = small_model().eval()
    set_gates(model[1], (True, False, True), torch.Generator().manual_seed(7))
    frozen = asx.freeze(model).eval()
    x = torch.randn(2, 3, 6, 6)
    program = torch.export.export(frozen, (x,))
    targets = [node.target for node in program.graph.nodes]
    gathers = targets.count(torch.ops.autoshuffle_ext.channel_gather.default)
    assert gathers == sum(isinstance(m, asx.HardShuffle) for m in frozen.modules()) >= 3
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), frozen(x), atol=0, rtol=0)


def test_state_dict_round_trip_and_copies():
    torch.manual_seed(0)
    module = asx.DGConv2d(12, 24, init_groups=3)
    module(torch.randn(1, 12, 2, 2))  # fills the plan cache
    other = asx.DGConv2d(12, 24, init_groups=3)
    other.load_state_dict(module.state_dict())
    assert torch.equal(other.gates, module.gates) and other.num_groups() == 3
    clone = copy.deepcopy(module)
    with torch.no_grad():
        clone.gates.fill_(-1.0)
    assert clone.num_groups() == 12 and module.num_groups() == 3
    dense_start = asx.DGConv2d(12, 24)  # factors (2, 2, 3), not (3, 2, 2)
    with pytest.raises(ValueError, match=r"gate_sizes'\] must equal .*\[2, 2, 3\], got \[3, 2,"):
        dense_start.load_state_dict(module.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1, got 0"),
        ({"out_channels": 2.0}, TypeError, "out_channels must be an int, got float 2.0"),
        ({"kernel_size": (1, 2, 3)}, ValueError, r"kernel_size must be an int or a pair"),
        ({"padding": "same"}, TypeError, "padding must be an int or a pair of ints, got the"),
        ({"stride": 0}, ValueError, "stride must be >= 1, got 0"),
        ({"dilation": (1, True)}, TypeError, "dilation must be an int, got bool True"),
        ({"bias": 1}, TypeError, "bias must be a bool, got int 1"),
        ({"budget": 0.0}, ValueError, r"budget must lie in \(0.0, 1.0\], got 0.0"),
        ({"budget": 1.5}, ValueError, r"budget must lie in \(0.0, 1.0\], got 1.5"),
        ({"budget": "half"}, TypeError, "budget must be a real number, got str"),
        ({"penalty_weight": -1.0}, ValueError, r"penalty_weight must lie in \[0.0, inf\]"),
        ({"penalty_weight": math.nan}, ValueError, "penalty_weight must lie in"),
        ({"gate_init": 0.0}, ValueError, r"gate_init must lie in \(0.0, inf\], got 0.0"),
        ({"init_groups": 5}, ValueError, r"groups must divide gcd\(in_channels, out_channels\)"),
        ({"init_groups": 0}, ValueError, "init_groups must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, match):
    args = {"in_channels": 12, "out_channels": 24} | kwargs
    with pytest.raises(error, match=match):
        asx.DGConv2d(**args)


def test_bad_inputs_and_group_counts_are_refused():
    module = asx.DGConv2d(12, 24)
    with pytest.raises(ValueError, match=r"input x must have shape \[N, 12, H, W\], got \(2, 8"):
        module(torch.randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match=r"got \(12, 3, 3\)"):
        module(torch.randn(12, 3, 3))
    with pytest.raises(ValueError, match=r"groups must divide .* = 12, got 8"):
        module.set_groups_(8)
    with pytest.raises(TypeError, match="groups must be an int, got float"):
        module.set_groups_(2.0)
