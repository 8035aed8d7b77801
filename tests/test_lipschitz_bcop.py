"""BCOPConv2d: its operator is orthogonal (norms of random inputs, float64), its singular values
(FFT) against the dense operator matrix, the kernel's assembly against a plain sequential
reference, eval-mode caching, the frozen module and its export, the bound, bad input."""

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import (
    BCOPConv2d,
    bjorck_orthonormalize,
    circular_conv2d,
    circular_conv_singular_values,
)


def randomize(layer: BCOPConv2d, seed: int) -> BCOPConv2d:
    """Parameters far from orthonormal, as training leaves them: random orthogonal matrices plus
    a Gaussian perturbation 0.3 / sqrt(c) per entry (singular values roughly in [0.4, 1.6]), at
    a random scale; the orthonormalisation does the work."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        T, c, _ = layer.matrices.shape
        Q, R = torch.linalg.qr(torch.randn(T, c, c, generator=g, dtype=torch.float64))
        Q = Q * torch.diagonal(R, dim1=-2, dim2=-1).sign()[:, None, :]
        noise = 0.3 / c**0.5 * torch.randn(T, c, c, generator=g, dtype=torch.float64)
        scale = torch.exp(torch.randn(T, 1, 1, generator=g, dtype=torch.float64))
        layer.matrices.copy_(scale * (Q + noise))
        if layer.bias is not None:
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer


def dense_operator(fn, in_shape) -> torch.Tensor:
    """The matrix [out_numel, in_numel] of a linear map of one sample, column by column."""
    n = torch.Size(in_shape).numel()
    basis = torch.eye(n, dtype=torch.float64).view(n, *in_shape)
    return fn(basis).reshape(n, -1).T


def reference_bcop_output(layer: BCOPConv2d, x: torch.Tensor) -> torch.Tensor:
    """The BCOP operator applied as what it is: H after (or before) a chain of 2x2 block
    convolutions, each block built entry by entry from its projectors, each applied as its own
    circular convolution (pad 1 before), then the shift that centres the k x k kernel."""
    ortho = bjorck_orthonormalize(layer.matrices, layer.bjorck_iters)
    k, cin, out = layer.conv_kernel_size, layer.conv_in_channels, layer.out_channels
    c = ortho.shape[-1]
    if layer.stride > 1:
        x = F.pixel_unshuffle(x, layer.stride)
    H = ortho[0, :out, :cin]
    bias = 0 if layer.bias is None else layer.bias.view(1, -1, 1, 1)
    if k == 1:
        return torch.einsum("oi,nihw->nohw", H, x) + bias
    eye = torch.eye(c, dtype=ortho.dtype)
    projectors = []
    for M in ortho[1:]:
        half = M[:, : c // 2]
        projectors.append(half @ half.T)
    if out > cin:  # H first
        x = torch.einsum("oi,nihw->nohw", H, x)
    else:
        x = F.pad(x, (0, 0, 0, 0, 0, c - cin))  # c == cin here; no-op
    for t in reversed(range(k - 1)):  # the last block is applied first
        P, Q = projectors[2 * t], projectors[2 * t + 1]
        block = torch.empty(c, c, 2, 2, dtype=ortho.dtype)
        for a, b in itertools.product(range(2), range(2)):
            block[:, :, a, b] = (P if a == 0 else eye - P) @ (Q if b == 0 else eye - Q)
        x = F.conv2d(F.pad(x, (1, 0, 1, 0), mode="circular"), block)
    if out <= cin:
        x = torch.einsum("oi,nihw->nohw", H, x)
    # k - 1 blocks each looked 1 back; the k x k kernel looks k // 2 back.
    shift = (k - 1) - k // 2
    x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
    return x + bias


@pytest.mark.parametrize("c", [8, 16])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_square_operator_is_orthogonal(c, k):
    layer = randomize(BCOPConv2d(c, c, k, bias=False).double(), seed=10 * c + k)
    x = torch.randn(6, c, 9, 11, dtype=torch.float64)
    y = layer(x)
    assert y.shape == x.shape
    ratio = y.detach().flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert float((ratio - 1).abs().max()) <= 1e-4
    # and it is no accident of the inputs: the dense operator is an orthogonal matrix
    A = dense_operator(layer, (c, 5, 5))
    torch.testing.assert_close(A.T @ A, torch.eye(A.shape[1], dtype=A.dtype), rtol=0, atol=1e-4)


def test_random_kernel_is_not_orthogonal():
    # The check above can fail: a plain random kernel of the same shape misses it by far.
    x = torch.randn(6, 8, 9, 9, dtype=torch.float64)
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64) / 8
    ratio = circular_conv2d(x, w).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert float((ratio - 1).abs().max()) > 1e-2


@pytest.mark.parametrize(
    ("cin", "out", "k", "stride"),
    [(8, 16, 3, 1), (16, 8, 3, 1), (6, 10, 5, 1), (12, 16, 2, 1), (3, 16, 4, 2), (16, 32, 4, 2)],
)
def test_rectangular_singular_values(cin, out, k, stride):
    layer = randomize(BCOPConv2d(cin, out, k, stride, bias=False).double(), seed=cin + out + k)
    sv = layer.singular_values((8, 8))
    conv_in = cin * stride * stride
    assert sv.shape == (8 // stride, 8 // stride, min(conv_in, out))
    assert float(sv.max()) <= 1 + 1e-4
    nonzero = sv[sv > 1e-6]
    assert nonzero.numel() == sv.numel()  # full rank at every frequency: all min(in, out) are 1
    torch.testing.assert_close(nonzero, torch.ones_like(nonzero), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("cin", "out", "k", "stride"), [(4, 6, 3, 1), (6, 4, 2, 1), (2, 5, 4, 2)])
def test_fft_singular_values_equal_the_dense_operators(cin, out, k, stride):
    # A plain random kernel (not orthogonal), so that the comparison has something to find.
    g = torch.Generator().manual_seed(cin * out)
    w = torch.randn(out, cin, k, k, generator=g, dtype=torch.float64)
    sv = circular_conv_singular_values(w, (6, 6)).flatten().sort().values
    A = dense_operator(lambda x: circular_conv2d(x, w), (cin, 6, 6))
    dense = torch.linalg.svdvals(A)
    dense = dense[: sv.numel()].sort().values  # the rest are zeros (rank <= 36 min(in, out))
    torch.testing.assert_close(sv, dense, rtol=1e-10, atol=1e-10)
    # and the layer's own spectrum through its kernel
    layer = randomize(BCOPConv2d(cin, out, k, stride, bias=False).double(), seed=1)
    kernel = layer.kernel()
    torch.testing.assert_close(
        layer.singular_values((12, 12)), circular_conv_singular_values(kernel, (12 // stride,) * 2)
    )


@pytest.mark.parametrize(
    ("cin", "out", "k", "stride"),
    [(8, 8, 3, 1), (8, 8, 5, 1), (6, 6, 4, 1), (8, 8, 7, 1), (4, 10, 3, 1), (12, 5, 2, 1),
     (3, 16, 4, 2), (8, 4, 6, 2), (5, 5, 1, 1)],
)  # fmt: skip
def test_kernel_assembly_equals_the_sequential_reference(cin, out, k, stride):
    layer = randomize(BCOPConv2d(cin, out, k, stride).double(), seed=k + 7 * cin)
    x = torch.randn(3, cin, 8 * stride, 6 * stride, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_bcop_output(layer, x), rtol=1e-10, atol=1e-10)


def test_gradients_flow_to_the_matrices_and_the_input():
    layer = randomize(BCOPConv2d(4, 4, 3).double(), seed=3)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    assert x.grad is not None and layer.matrices.grad is not None and layer.bias.grad is not None
    assert float(layer.matrices.grad.abs().sum()) > 0
    # d ||W x + b||^2 / dx = 2 W^T (W x + b): an orthogonal W keeps the gradient's norm
    g = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    x2 = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((layer(x2) * g).sum(), x2)
    torch.testing.assert_close(grad.norm(), g.norm(), rtol=1e-8, atol=0)


def test_eval_mode_caches_the_kernel(monkeypatch):
    layer = randomize(BCOPConv2d(6, 6, 3), seed=4)
    x = torch.randn(2, 6, 8, 8)
    train_out = layer(x)
    calls = []
    kernel = BCOPConv2d.kernel

    def counted(self):
        calls.append(1)
        return kernel(self)

    monkeypatch.setattr(BCOPConv2d, "kernel", counted)
    layer.eval()
    first = layer(x)
    second = layer(x)
    assert len(calls) == 1  # computed once
    assert torch.equal(first, second)
    torch.testing.assert_close(first, train_out, rtol=0, atol=0)
    assert not first.requires_grad or first.grad_fn is not None
    # a parameter update invalidates the cache
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    layer(x).sum().backward()
    opt.step()
    layer.eval()
    updated = layer(x)
    assert len(calls) == 3  # the training forward, then one recomputation
    assert not torch.allclose(updated, first)
    with torch.no_grad():
        layer.train()
        expected = layer(x)
    torch.testing.assert_close(updated, expected, rtol=0, atol=0)
    # load_state_dict too
    layer.eval()
    other = randomize(BCOPConv2d(6, 6, 3), seed=5)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(x), other(x), rtol=0, atol=0)


def test_eval_cache_is_not_copied_stale():
    layer = randomize(BCOPConv2d(4, 4, 3), seed=6).eval()
    x = torch.randn(1, 4, 6, 6)
    layer(x)
    clone = copy.deepcopy(layer)
    with torch.no_grad():
        clone.matrices.add_(0.5)
    assert not torch.allclose(clone(x), layer(x))
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.__dict__.get("_eval_cache") is None
    torch.testing.assert_close(loaded(x), layer(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cin", "out", "k", "stride", "bias"),
    [(8, 8, 3, 1, True), (8, 8, 1, 1, False), (6, 10, 2, 1, True), (3, 16, 4, 2, True),
     (16, 8, 5, 1, False)],
)  # fmt: skip
def test_to_inference_computes_the_same(cin, out, k, stride, bias):
    layer = randomize(BCOPConv2d(cin, out, k, stride, bias=bias).double(), seed=k * cin)
    frozen = layer.to_inference()
    assert not isinstance(frozen, asx.LearnedStructure)
    conv = frozen[-1] if isinstance(frozen, torch.nn.Sequential) else frozen
    assert type(conv) is torch.nn.Conv2d
    x = torch.randn(3, cin, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), layer(x), rtol=1e-12, atol=1e-12)
    assert asx.freeze(torch.nn.Sequential(layer))(x).allclose(layer(x), rtol=1e-12, atol=1e-12)


def test_odd_kernel_freezes_to_a_circular_conv2d():
    layer = BCOPConv2d(8, 8, 3)
    frozen = layer.to_inference()
    assert isinstance(frozen, torch.nn.Conv2d)
    assert frozen.padding == (1, 1) and frozen.padding_mode == "circular"


def test_frozen_model_exports():
    model = torch.nn.Sequential(
        randomize(BCOPConv2d(3, 8, 4, 2), seed=1), torch.nn.ReLU(), BCOPConv2d(8, 8, 3)
    )
    frozen = asx.freeze(model).eval()
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(frozen, (x,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_lipschitz_bound_and_report():
    layer = randomize(BCOPConv2d(6, 10, 3), seed=8)
    bound = layer.lipschitz_bound()
    assert 1 - 1e-5 <= bound <= 1 + 1e-4
    assert float(layer.singular_values((8, 8)).max()) <= bound + 1e-6
    row = asx.structure_report(torch.nn.Sequential(layer))[0]
    assert row["kind"] == "BCOPConv2d" and row["penalty"] == 0.0
    assert row["orthogonality"] < 1e-4 and row["lipschitz_bound"] == pytest.approx(bound)


@pytest.mark.parametrize(("cin", "out", "k"), [(6, 6, 3), (4, 8, 2), (8, 5, 4)])
def test_lipschitz_bound_holds_for_matrices_that_are_not_orthonormal(monkeypatch, cin, out, k):
    # The bound's argument (sigma_max(H) times |l| + |1 - l| per projector eigenvalue) must hold
    # for any matrices, not only orthonormal ones: feed Gaussian ones in place of Björck's.
    layer = BCOPConv2d(cin, out, k).double()
    g = torch.Generator().manual_seed(k)
    raw = 0.6 * torch.randn(layer.matrices.shape, generator=g, dtype=torch.float64)
    monkeypatch.setattr(BCOPConv2d, "orthonormal_matrices", lambda self: raw)
    bound = layer.lipschitz_bound()
    exact = max(float(layer.singular_values((n, n)).max()) for n in (4, 7, 16))
    assert exact <= bound * (1 + 1e-9)
    assert exact > 1.05  # not orthogonal: the check has something to bound


def test_protocol_hints():
    layer = BCOPConv2d(4, 8, 3)
    (group,) = layer.param_groups()
    assert group.name == "orthogonal" and group.weight_decay == 0.0
    assert group.params == (layer.matrices,)
    assert float(asx.penalty(torch.nn.Sequential(layer))) == 0.0
    x = torch.randn(2, 4, 8, 8)
    assert layer.macs((x,), layer(x)) == (8 * 64 * 4 * 9, 8 * 64 * 4 * 9)


def test_bad_input():
    with pytest.raises(ValueError, match="kernel_size must be a multiple of stride, got "
                       "kernel_size=3 and stride=2"):  # fmt: skip
        BCOPConv2d(4, 4, 3, 2)
    with pytest.raises(TypeError, match=r"in_channels must be an int, got float 4\.0"):
        BCOPConv2d(4.0, 4, 3)
    with pytest.raises(ValueError, match="out_channels must be >= 1, got 0"):
        BCOPConv2d(4, 0, 3)
    with pytest.raises(TypeError, match="bias must be a bool, got int 1"):
        BCOPConv2d(4, 4, 3, bias=1)
    layer = BCOPConv2d(4, 4, 4, 2)
    with pytest.raises(ValueError, match=r"input x must have shape \[N, 4, H, W\] with H and W "
                       r"multiples of stride 2, got \(1, 4, 7, 8\)"):  # fmt: skip
        layer(torch.randn(1, 4, 7, 8))
    with pytest.raises(ValueError, match=r"got \(1, 3, 8, 8\)"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="input_size must be two ints"):
        layer.singular_values((7, 8))
