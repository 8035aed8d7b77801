"""GroupSort and MaxMin (against plain per-group sorting; norm and gradient-norm preservation),
the invertible downsampling (against explicit indexing; its inverse), BjorckLinear (orthonormal
weight, eval cache, frozen nn.Linear), bad input."""

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import BjorckLinear, GroupSort, InvertibleDownsampling, MaxMin


def reference_group_sort(x: torch.Tensor, g: int) -> torch.Tensor:
    """Sorts channels [i g, (i + 1) g) of every sample and pixel descending, one group at a
    time, by Python's sorted."""
    out = x.clone()
    flat_in = x.movedim(1, -1).reshape(-1, x.shape[1])
    flat_out = out.movedim(1, -1).reshape(-1, x.shape[1])
    for r in range(flat_in.shape[0]):
        for start in range(0, x.shape[1], g):
            values = sorted(flat_in[r, start : start + g].tolist(), reverse=True)
            flat_out[r, start : start + g] = torch.tensor(values, dtype=x.dtype)
    return flat_out.reshape(*x.movedim(1, -1).shape).movedim(-1, 1)


def reference_max_min(x: torch.Tensor) -> torch.Tensor:
    """out[:, i] = max(x[:, i], x[:, m + i]), out[:, m + i] = the min, channel by channel."""
    m = x.shape[1] // 2
    out = torch.empty_like(x)
    for i in range(m):
        a, b = x[:, i], x[:, m + i]
        out[:, i] = torch.where(a >= b, a, b)
        out[:, m + i] = torch.where(a >= b, b, a)
    return out


@pytest.mark.parametrize("g", [1, 2, 3, 4])
def test_group_sort_equals_reference(g):
    x = torch.randn(3, 12, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(GroupSort(g)(x), reference_group_sort(x, g), rtol=0, atol=0)


def test_max_min_equals_reference_and_differs_from_adjacent_pairs():
    x = torch.randn(4, 10, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(MaxMin()(x), reference_max_min(x), rtol=0, atol=0)
    assert not torch.equal(MaxMin()(x), GroupSort(2)(x))  # halves, not neighbours


def test_dim_argument():
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(GroupSort(4, dim=-1)(x), reference_group_sort(x, 4))
    torch.testing.assert_close(MaxMin(dim=1)(x), reference_max_min(x))


@pytest.mark.parametrize("module", [GroupSort(2), GroupSort(4), MaxMin()], ids=repr)
def test_norm_and_gradient_norm_preserved(module):
    x = torch.randn(6, 16, 5, 5, dtype=torch.float64, requires_grad=True)
    y = module(x)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.detach().flatten(1).norm(dim=1))
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), x)
    # per sample: the Jacobian is a permutation
    torch.testing.assert_close(grad.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1))
    assert torch.equal(grad.flatten(1).sort(dim=1).values, g.flatten(1).sort(dim=1).values)


def test_relu_does_not_preserve_gradient_norm():
    # The check above can fail: ReLU's gradient loses the negative half.
    x = torch.randn(6, 16, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 16, dtype=torch.float64)
    (grad,) = torch.autograd.grad((torch.relu(x) * g).sum(), x)
    assert float((grad.norm(dim=1) / g.norm(dim=1)).max()) < 0.99


def test_activation_bad_input():
    with pytest.raises(ValueError, match=r"size 10 of dim 1 of the input must be a multiple of 4"):
        GroupSort(4)(torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"size 5 of dim 1 of the input must be a multiple of 2"):
        MaxMin()(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match=r"dim 3 out of range for an input of shape \(2, 4\)"):
        MaxMin(dim=3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        GroupSort(0)
    with pytest.raises(TypeError, match="dim must be an int, got str"):
        MaxMin(dim="1")


@pytest.mark.parametrize("s", [1, 2, 3])
def test_invertible_downsampling(s):
    x = torch.randn(2, 3, 6 * s, 4 * s, dtype=torch.float64)
    down = InvertibleDownsampling(s)
    y = down(x)
    assert y.shape == (2, 3 * s * s, 6, 4)
    for c in range(3):
        for i in range(s):
            for j in range(s):
                assert torch.equal(y[:, c * s * s + i * s + j], x[:, c, i::s, j::s])
    assert torch.equal(down.inverse(y), x)
    torch.testing.assert_close(y.norm(), x.norm())
    with pytest.raises(ValueError, match=r"multiples of 2, got \(2, 3, 5, 4\)"):
        InvertibleDownsampling(2)(torch.randn(2, 3, 5, 4))
    with pytest.raises(ValueError, match=r"y must have shape \[N, C \* 4, H, W\], got"):
        InvertibleDownsampling(2).inverse(torch.randn(1, 6, 2, 2))


@pytest.mark.parametrize(("fin", "fout"), [(16, 16), (20, 7), (7, 20)])
def test_bjorck_linear(fin, fout):
    layer = BjorckLinear(fin, fout).double()
    g = torch.Generator().manual_seed(fin + fout)
    with torch.no_grad():  # far from orthonormal, at a random scale
        layer.weight.copy_(3 * torch.randn(fout, fin, generator=g, dtype=torch.float64))
        layer.weight.add_(torch.eye(fout, fin, dtype=torch.float64) * 8)
    W = layer.orthonormal_weight()
    small = torch.eye(min(fin, fout), dtype=torch.float64)
    gram = W @ W.T if fout <= fin else W.T @ W
    torch.testing.assert_close(gram, small, rtol=0, atol=1e-8)
    x = torch.randn(5, fin, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ W.T + layer.bias)
    if fout >= fin:  # an isometry
        torch.testing.assert_close((layer(x) - layer.bias).norm(dim=1), x.norm(dim=1))
    frozen = asx.freeze(layer)
    assert type(frozen) is torch.nn.Linear
    torch.testing.assert_close(frozen(x), layer(x), rtol=1e-12, atol=1e-12)
    assert layer.lipschitz_bound() == pytest.approx(1.0, abs=1e-8)


def test_bjorck_linear_eval_cache_and_hints():
    layer = BjorckLinear(6, 4)
    x = torch.randn(3, 6)
    train_out = layer(x)
    layer.eval()
    first = layer(x)
    assert layer._eval_cache is not None
    cached = layer._eval_cache[1]
    assert layer(x).equal(first) and layer._eval_cache[1] is cached
    torch.testing.assert_close(first, train_out, rtol=0, atol=0)
    with torch.no_grad():
        layer.weight.mul_(-1)
    torch.testing.assert_close(layer(x), -(first - layer.bias) + layer.bias, rtol=0, atol=1e-6)
    (group,) = layer.param_groups()
    assert group.name == "orthogonal" and group.params == (layer.weight,)
    out = layer(x)
    assert layer.macs((x,), out) == (24, 24)


def test_bjorck_linear_bad_input():
    with pytest.raises(ValueError, match=r"input x must have shape \[..., 6\], got \(3, 5\)"):
        BjorckLinear(6, 4)(torch.randn(3, 5))
    with pytest.raises(TypeError, match="out_features must be an int, got NoneType"):
        BjorckLinear(6, None)
