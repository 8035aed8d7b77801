"""channel_gather and cat_gather under forward-mode autodiff and torch.func's transforms
(vmap, grad, jvp, vjp, jacrev, jacfwd), against the plain reference `x[:, perm]`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

import autoshuffle_ext as asx
from tests.references import BLOCK_COMPILED_LIBRARY

GATHER = torch.ops.autoshuffle_ext.channel_gather
CAT_GATHER = torch.ops.autoshuffle_ext.cat_gather


def _inputs(shape, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    v = torch.randn(shape, dtype=torch.float64, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    perm = torch.randperm(shape[1], generator=g)
    return x, v, perm


LAYOUTS = ["contiguous", "channels_last"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_gather_jvp_is_gather_of_tangent(layout):
    x, v, perm = _inputs((2, 6, 3, 4), layout)
    out, tangent = jvp(lambda t: asx.channel_gather(t, perm), (x,), (v,))
    assert torch.equal(out, x[:, perm])
    assert torch.equal(tangent, v[:, perm])


def test_channel_gather_forward_ad_dual():
    x, v, perm = _inputs((3, 5, 2))
    with fwAD.dual_level():
        y = GATHER(fwAD.make_dual(x, v), perm)
        primal, tangent = fwAD.unpack_dual(y)
    assert torch.equal(primal, x[:, perm])
    assert tangent is not None
    assert torch.equal(tangent, v[:, perm])


def test_channel_gather_jacobians():
    x, _, perm = _inputs((2, 4, 3))
    expected = jacrev(lambda t: t[:, perm])(x)
    assert expected.abs().sum() > 0
    for transform in (jacfwd, jacrev):
        assert torch.equal(transform(lambda t: asx.channel_gather(t, perm))(x), expected)
    shuffle = asx.HardShuffle(perm)
    assert torch.equal(jacfwd(shuffle)(x), expected)
    assert torch.equal(jacrev(shuffle)(x), expected)
    # Second order: jacobians of jacobians, both ways.
    hess = jacfwd(jacrev(lambda t: (asx.channel_gather(t, perm) ** 3).sum()))(x)
    ref = jacfwd(jacrev(lambda t: (t[:, perm] ** 3).sum()))(x)
    assert torch.allclose(hess, ref)


def test_channel_gather_grad_and_vjp():
    x, v, perm = _inputs((2, 5, 3))
    w = torch.randn_like(x)
    g = grad(lambda t: (asx.channel_gather(t, perm) * w).sum())(x)
    assert torch.equal(g, (w[:, asx.ops.inverse_permutation(perm)]))
    out, pullback = vjp(lambda t: asx.channel_gather(t, perm), x)
    assert torch.equal(out, x[:, perm])
    assert torch.equal(pullback(v)[0], v[:, asx.ops.inverse_permutation(perm)])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_gather_vmap_has_a_batching_rule(layout):
    x, _, perm = _inputs((2, 6, 3, 4), layout)
    xs = torch.stack([x, 2 * x, -x], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "performance drop" per-sample fallback
        for in_dim, batched in ((0, xs), (2, xs.movedim(0, 2)), (4, xs.movedim(0, -1))):
            out = vmap(lambda t: GATHER(t, perm), in_dims=in_dim)(batched)
            assert torch.equal(out, xs[:, :, perm])
        # Per-sample permutations.
        perms = torch.stack([torch.randperm(6) for _ in range(3)])
        out = vmap(lambda t, p: GATHER(t, p))(xs, perms)
        assert torch.equal(out, torch.stack([xs[i][:, perms[i]] for i in range(3)]))
        out = vmap(lambda p: GATHER(x, p))(perms)
        assert torch.equal(out, torch.stack([x[:, perms[i]] for i in range(3)]))
        out = vmap(lambda p: asx.channel_gather(x, p))(perms)
        assert torch.equal(out, torch.stack([x[:, perms[i]] for i in range(3)]))


def test_channel_gather_nested_transforms():
    x, v, perm = _inputs((2, 4, 3))
    xs = torch.stack([x, x + 1])
    vs = torch.stack([v, -v])
    out = vmap(lambda t, u: jvp(lambda s: GATHER(s, perm), (t,), (u,))[1])(xs, vs)
    assert torch.equal(out, vs[:, :, perm])
    out = jvp(lambda t: vmap(lambda s: GATHER(s, perm))(t), (xs,), (vs,))[1]
    assert torch.equal(out, vs[:, :, perm])
    w = torch.randn_like(xs)
    out = vmap(grad(lambda t, u: (GATHER(t, perm) * u).sum()))(xs, w)
    assert torch.equal(out, w[:, :, asx.ops.inverse_permutation(perm)])


def test_channel_gather_gradcheck_forward_and_batched():
    for layout in LAYOUTS:
        x, _, perm = _inputs((2, 6, 3, 2), layout)
        x.requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t, perm=perm: GATHER(t, perm),
            (x,),
            check_forward_ad=True,
            check_batched_grad=True,
            check_batched_forward_grad=True,
        )
        assert torch.autograd.gradgradcheck(
            lambda t, perm=perm: GATHER(t, perm),
            (x,),
            check_fwd_over_rev=True,
            check_rev_over_rev=True,
        )


def test_channel_gather_opcheck_with_forward_ad():
    # opcheck (torch 2.13) has no forward-AD test of its own: its default tests, plus the
    # forward-mode gradcheck of the op (tangents against finite differences).
    x, _, perm = _inputs((2, 8, 3, 3), "channels_last")
    x.requires_grad_()
    torch.library.opcheck(GATHER.default, (x, perm))
    assert torch.autograd.gradcheck(
        lambda t: GATHER.default(t, perm), (x,), check_forward_ad=True, check_backward_ad=False
    )


def _cat_inputs(layout="contiguous", seed=1):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2, 3, 4, 2, dtype=torch.float64, generator=g)
    b = torch.randn(2, 5, 4, 2, dtype=torch.float64, generator=g)
    if layout == "channels_last":
        a = a.contiguous(memory_format=torch.channels_last)
        b = b.contiguous(memory_format=torch.channels_last)
    va, vb = torch.randn_like(a), torch.randn_like(b)
    return a, b, va, vb, torch.randperm(8, generator=g)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cat_gather_jvp_is_gather_of_tangents(layout):
    a, b, va, vb, perm = _cat_inputs(layout)
    out, tangent = jvp(lambda s, t: asx.cat_gather(s, t, perm), (a, b), (va, vb))
    assert torch.equal(out, torch.cat([a, b], 1)[:, perm])
    assert torch.equal(tangent, torch.cat([va, vb], 1)[:, perm])
    # A tangent on one input only: the other counts as zero.
    tangent = jvp(lambda s: asx.cat_gather(s, b, perm), (a,), (va,))[1]
    assert torch.equal(tangent, torch.cat([va, torch.zeros_like(b)], 1)[:, perm])
    with fwAD.dual_level():
        y = CAT_GATHER(a, fwAD.make_dual(b, vb), perm)
        tangent = fwAD.unpack_dual(y).tangent
    assert tangent is not None
    assert torch.equal(tangent, torch.cat([torch.zeros_like(a), vb], 1)[:, perm])


def test_cat_gather_jacobians_grad_and_vmap():
    a, b, va, vb, perm = _cat_inputs()

    def ref(s, t):
        return torch.cat([s, t], 1)[:, perm]

    expected = jacrev(ref, argnums=(0, 1))(a, b)
    for transform in (jacfwd, jacrev):
        got = transform(lambda s, t: asx.cat_gather(s, t, perm), argnums=(0, 1))(a, b)
        assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    w = torch.randn(2, 8, 4, 2, dtype=torch.float64)
    ga, gb = grad(lambda s, t: (CAT_GATHER(s, t, perm) * w).sum(), argnums=(0, 1))(a, b)
    full = w[:, asx.ops.inverse_permutation(perm)]
    assert torch.equal(ga, full[:, :3]) and torch.equal(gb, full[:, 3:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a_s, b_s = torch.stack([a, 2 * a]), torch.stack([b, -b])
        expected = torch.cat([a_s, b_s], 2)[:, :, perm]
        assert torch.equal(vmap(lambda s, t: CAT_GATHER(s, t, perm))(a_s, b_s), expected)
        got = vmap(lambda s, t: CAT_GATHER(s, t, perm), in_dims=(0, 3))(a_s, b_s.movedim(0, 3))
        assert torch.equal(got, expected)
        # One batched input, the other shared.
        expected = torch.cat([a_s, b.expand(2, -1, -1, -1, -1)], 2)[:, :, perm]
        assert torch.equal(vmap(lambda s: CAT_GATHER(s, b, perm))(a_s), expected)
        perms = torch.stack([perm, perm.flip(0)])
        got = vmap(lambda p: CAT_GATHER(a, b, p))(perms)
        assert torch.equal(got, torch.stack([ref(a, b), torch.cat([a, b], 1)[:, perm.flip(0)]]))
        got = vmap(lambda p: asx.cat_gather(a, b, p))(perms)
        assert torch.equal(got, torch.stack([ref(a, b), torch.cat([a, b], 1)[:, perm.flip(0)]]))
    out = vmap(lambda s, t, u, v: jvp(lambda x, y: CAT_GATHER(x, y, perm), (s, t), (u, v))[1])(
        torch.stack([a, a]), torch.stack([b, b]), torch.stack([va, -va]), torch.stack([vb, vb])
    )
    assert torch.equal(out[1], torch.cat([-va, vb], 1)[:, perm])


def test_cat_gather_gradcheck_forward_and_opcheck():
    for layout in LAYOUTS:
        a, b, _, _, perm = _cat_inputs(layout)
        a.requires_grad_()
        b.requires_grad_()
        assert torch.autograd.gradcheck(
            lambda s, t, perm=perm: CAT_GATHER(s, t, perm),
            (a, b),
            check_forward_ad=True,
            check_batched_grad=True,
            check_batched_forward_grad=True,
        )
        assert torch.autograd.gradgradcheck(
            lambda s, t, perm=perm: CAT_GATHER(s, t, perm), (a, b), check_fwd_over_rev=True
        )
        torch.library.opcheck(CAT_GATHER.default, (a, b, perm))


def test_frozen_model_forward_mode():
    model = asx.models.shufflenet_v2(0.5, num_classes=3, stem="cifar", shuffle="random")
    model = model.double().eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    v = torch.randn_like(x)
    _, expected = torch.autograd.functional.jvp(model, x, v)
    _, tangent = jvp(model, (x,), (v,))
    assert tangent.abs().sum() > 0
    assert torch.allclose(tangent, expected)


def test_compiled_autograd_through_the_gathers():
    from torch._dynamo import compiled_autograd

    x = torch.randn(2, 4, 3, requires_grad=True)
    b = torch.randn(2, 2, 3, requires_grad=True)
    perm, perm6 = torch.randperm(4), torch.randperm(6)
    w = torch.randn(2, 6, 3)
    with compiled_autograd._enable(torch.compile(backend="eager")):
        (CAT_GATHER(GATHER(x, perm), b, perm6) * w).sum().backward()
    full = w[:, asx.ops.inverse_permutation(perm6)]
    assert torch.equal(b.grad, full[:, 4:])
    assert torch.equal(x.grad, full[:, :4][:, asx.ops.inverse_permutation(perm)])


_FALLBACK = BLOCK_COMPILED_LIBRARY + textwrap.dedent(
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import autoshuffle_ext as asx
    from torch.func import grad, jacfwd, jacrev, jvp, vmap
    assert not asx.extension_available()

    x = torch.randn(2, 6, 3, dtype=torch.float64)
    v = torch.randn_like(x)
    perm = torch.randperm(6)
    assert torch.equal(jvp(lambda t: asx.channel_gather(t, perm), (x,), (v,))[1], v[:, perm])
    expected = jacrev(lambda t: t[:, perm])(x)
    assert torch.equal(jacfwd(lambda t: asx.channel_gather(t, perm))(x), expected)
    assert torch.equal(jacrev(lambda t: asx.channel_gather(t, perm))(x), expected)
    xs = torch.stack([x, -x])
    assert torch.equal(vmap(lambda t: asx.channel_gather(t, perm))(xs), xs[:, :, perm])
    a, b = x[:, :2], x[:, 2:]
    va, vb = v[:, :2], v[:, 2:]
    tangent = jvp(lambda s, t: asx.cat_gather(s, t, perm), (a, b), (va, vb))[1]
    assert torch.equal(tangent, v[:, perm])
    got = jacfwd(lambda s, t: asx.cat_gather(s, t, perm), argnums=(0, 1))(a, b)
    ref = jacrev(lambda s, t: torch.cat([s, t], 1)[:, perm], argnums=(0, 1))(a, b)
    assert all(torch.equal(g, r) for g, r in zip(got, ref, strict=True))
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: asx.channel_gather(t, perm), (x,), check_forward_ad=True
    )
    print("fallback transforms ok")
    """
)


def test_fallback_forward_mode_and_transforms():
    result = subprocess.run(
        [sys.executable, "-c", _FALLBACK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "fallback transforms ok" in result.stdout
