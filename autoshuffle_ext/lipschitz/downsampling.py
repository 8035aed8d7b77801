"""`InvertibleDownsampling`: stride by rearrangement (Jacobsen, Smeulders, Oyallon, ICLR 2018):
each s x s patch of a channel becomes s^2 channels of one pixel (`F.pixel_unshuffle`), a
permutation of the entries, so orthogonal: the paper's networks stride this way before an
orthogonal convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_int

__all__ = ["InvertibleDownsampling"]


class InvertibleDownsampling(nn.Module):
    """[N, C, H, W] -> [N, C s^2, H / s, W / s] with out[:, c s^2 + i s + j, y, x] =
    in[:, c, y s + i, x s + j] (`nn.PixelUnshuffle`'s order); `inverse` undoes it.

    Raises:
        TypeError: factor not an int.
        ValueError: factor < 1; in the forward, an input not 4-D with H, W multiples of factor.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = check_int("factor", factor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.factor
        if x.dim() != 4 or x.shape[2] % s or x.shape[3] % s:
            raise ValueError(
                f"InvertibleDownsampling: input x must have shape [N, C, H, W] with H and W "
                f"multiples of {s}, got {tuple(x.shape)}"
            )
        return F.pixel_unshuffle(x, s)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """[N, C s^2, H, W] -> [N, C, H s, W s], the input that `forward` maps to y."""
        s = self.factor
        if y.dim() != 4 or y.shape[1] % (s * s):
            raise ValueError(
                f"InvertibleDownsampling.inverse: y must have shape [N, C * {s * s}, H, W], "
                f"got {tuple(y.shape)}"
            )
        return F.pixel_shuffle(y, s)

    def lipschitz_bound(self) -> float:
        """1: a permutation of the entries."""
        return 1.0

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
