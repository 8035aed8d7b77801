"""`lipschitz_bound(model)`: an upper bound on the l2 Lipschitz constant of a network, the product
of per-layer bounds.

Per layer:
- a module with a `lipschitz_bound()` method (the package's `BCOPConv2d`, `BjorckLinear`,
  `GroupSort`, `MaxMin`, `InvertibleDownsampling`, `OrthogonalShuffle`, `SignedShuffle`, or a
  user's) gives its own;
- `nn.Linear`: sigma_max of the weight, exactly;
- `nn.Conv2d` (zero or circular padding, any stride, dilation, groups), and a channel-wise pad
  followed by one (a frozen `BCOPConv2d` of even kernel): the norm of the convolution on the
  whole plane, sup over frequencies w of sigma_max(K^(w)), which bounds the layer for every input
  size. It is computed on an N x N frequency grid and made rigorous by Bernstein's inequality:
  with m = kh - 1 + kw - 1 and N >= 32 m, sup <= max_grid / sqrt(1 - (2 pi m / N)^2 / 2), at
  most 1 % above the grid's maximum;
- exact permutations (`HardShuffle`, `FixedShuffle`, `nn.PixelShuffle`/`Unshuffle`), reshapes
  (`nn.Flatten`, `nn.Unflatten`, `nn.Identity`) and `nn.ReLU`: 1; `nn.LeakyReLU`:
  max(1, |slope|); `nn.Tanh`: 1; `nn.Sigmoid`: 1/4; `nn.Dropout`: 1 in evaluation mode.

A container multiplies the bounds of its children, so the result bounds the network when its
forward applies its leaf layers one after the other (an `nn.Sequential`, the package's
LipConvNets): a block with a skip connection must define its own `lipschitz_bound()`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..modules.hard import FixedShuffle, HardShuffle

__all__ = ["conv2d_lipschitz_bound", "lipschitz_bound"]

_PERMUTATIONS = (
    HardShuffle,
    FixedShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.ReLU,
    nn.Tanh,
)
_CHANNELWISE_PADS = (nn.CircularPad2d, nn.ZeroPad2d)
# Bytes of complex transfer matrices evaluated at once.
_CHUNK_BYTES = 1 << 26


def _dense_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """The conv's weight as one ungrouped, undilated kernel [out, in, kh', kw'] (float64)."""
    w = conv.weight.detach().double()
    out, cin_g, kh, kw = w.shape
    g = conv.groups
    dh, dw = conv.dilation
    dense = w.new_zeros(out, cin_g * g, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    for j in range(g):  # block diagonal over the groups
        rows, cols = slice(j * out // g, (j + 1) * out // g), slice(j * cin_g, (j + 1) * cin_g)
        dense[rows, cols, ::dh, ::dw] = w[rows]
    return dense


@torch.no_grad()
def conv2d_lipschitz_bound(weight: torch.Tensor) -> float:
    """An upper bound on the l2 norm of the convolution by `weight` [out, in, kh, kw] (stride 1)
    on the whole plane, hence on any input size, zero or circular padding, and any stride: the
    maximum of sigma_max(K^(w)) over an N x N frequency grid (N >= 32 (kh + kw - 2)), divided by
    sqrt(1 - (2 pi (kh + kw - 2) / N)^2 / 2) (Bernstein's inequality bounds how far the supremum
    lies above the grid). Exact for a 1 x 1 kernel.

    Raises:
        ValueError: weight not 4-D.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor [out, in, kh, kw], got {got}")
    w = weight.detach().double()
    out, cin, kh, kw = w.shape
    m = (kh - 1) + (kw - 1)
    if m == 0:
        return float(torch.linalg.matrix_norm(w[:, :, 0, 0], ord=2))
    n = 32 * m
    taps = w.permute(2, 3, 0, 1).reshape(kh * kw, out * cin).to(torch.complex128)
    a = torch.arange(kh, dtype=torch.float64).repeat_interleave(kw)
    b = torch.arange(kw, dtype=torch.float64).repeat(kh)
    step = 2 * math.pi / n
    # A real kernel has K^(-w) = conj(K^(w)), of the same singular values: half the grid will do.
    half = torch.arange(n // 2 + 1, dtype=torch.float64) * step
    grid = torch.arange(n, dtype=torch.float64) * step
    wu, wv = torch.meshgrid(half, grid, indexing="ij")
    wu, wv = wu.flatten(), wv.flatten()
    chunk = max(1, _CHUNK_BYTES // (16 * out * cin))
    best = 0.0
    for start in range(0, wu.numel(), chunk):
        phase = wu[start : start + chunk, None] * a + wv[start : start + chunk, None] * b
        transfer = (torch.polar(torch.ones_like(phase), phase) @ taps).view(-1, out, cin)
        # sigma_max^2 as the largest eigenvalue of the smaller Gram matrix.
        gram = transfer @ transfer.mH if out <= cin else transfer.mH @ transfer
        best = max(best, float(torch.linalg.eigvalsh(gram)[:, -1].max()))
    slack = 1 - (2 * math.pi * m / n) ** 2 / 2
    return math.sqrt(best / slack)


def _leaf_bound(module: nn.Module) -> float:
    if isinstance(module, nn.Linear):
        return float(torch.linalg.matrix_norm(module.weight.detach().double(), ord=2))
    if isinstance(module, nn.Conv2d):
        if module.padding_mode not in ("zeros", "circular"):
            raise TypeError(
                f"lipschitz_bound: nn.Conv2d with padding_mode={module.padding_mode!r} is not "
                "covered (only 'zeros' and 'circular')"
            )
        return conv2d_lipschitz_bound(_dense_kernel(module))
    if isinstance(module, _PERMUTATIONS):
        return 1.0
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(module.negative_slope))
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.Dropout):
        return 1.0 / (1.0 - module.p) if module.training and module.p < 1 else 1.0
    raise TypeError(
        f"lipschitz_bound: no bound known for {type(module).__name__}; give it a "
        "lipschitz_bound() method"
    )


@torch.no_grad()
def lipschitz_bound(model: nn.Module) -> float:
    """An upper bound on the l2 Lipschitz constant of `model`: the product of its layers' bounds
    (see the module docstring for each kind). Valid when the forward applies the leaf layers one
    after the other; 1 (up to the orthonormalisation's error) for the package's LipConvNets,
    trained or frozen.

    Raises:
        TypeError: model not an nn.Module; a layer with no known bound (name and kind given),
            a lone pad (padding alone is not 1-Lipschitz).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    own = getattr(model, "lipschitz_bound", None)
    if callable(own):
        return float(own())
    children = list(model.children())
    if not children:
        return _leaf_bound(model)
    bound = 1.0
    i = 0
    while i < len(children):
        child = children[i]
        if isinstance(child, _CHANNELWISE_PADS):
            nxt = children[i + 1] if i + 1 < len(children) else None
            if not (isinstance(nxt, nn.Conv2d) and nxt.padding_mode == "zeros"):
                raise TypeError(
                    f"lipschitz_bound: {type(child).__name__} must be followed by an unpadded "
                    "nn.Conv2d (a pad alone is not 1-Lipschitz)"
                )
            # The pad and the conv are one (circular or zero padded) convolution.
            child, i = nxt, i + 1
        bound *= lipschitz_bound(child)
        i += 1
    return bound
