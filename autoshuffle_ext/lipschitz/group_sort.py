"""Gradient-norm-preserving activations (Anil, Lucas, Grosse, ICML 2019): `GroupSort` sorts
groups of channels, `MaxMin` takes the max and the min of channel pairs. Each sample's output is
a permutation of its input, so the map preserves the l2 norm, and its Jacobian (a permutation
matrix almost everywhere) preserves the norm of every gradient: 1-Lipschitz without the gradient
attenuation of ReLU."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_int

__all__ = ["GroupSort", "MaxMin"]


def _check_input(x: torch.Tensor, dim: int, group: int, module: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{module}: input x must be a torch.Tensor, got {type(x).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{module}: dim {dim} out of range for an input of shape {tuple(x.shape)}")
    dim = dim % x.dim()
    if x.shape[dim] % group:
        raise ValueError(
            f"{module}: size {x.shape[dim]} of dim {dim} of the input must be a multiple of "
            f"{group}, got input shape {tuple(x.shape)}"
        )
    return dim


class GroupSort(nn.Module):
    """Sorts each group of `group_size` consecutive entries along `dim` in descending order
    (channels 0..g-1, g..2g-1, ...). Shape-preserving; group_size 2 is MaxMin of adjacent pairs.

    Raises:
        TypeError: group_size or dim not an int.
        ValueError: group_size < 1; in the forward, dim out of range, or the size of dim not a
            multiple of group_size.
    """

    def __init__(self, group_size: int = 2, dim: int = 1) -> None:
        super().__init__()
        self.group_size = check_int("group_size", group_size, 1)
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"dim must be an int, got {type(dim).__name__} {dim!r}")
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _check_input(x, self.dim, self.group_size, "GroupSort")
        g = self.group_size
        groups = x.unflatten(dim, (x.shape[dim] // g, g))
        return groups.sort(dim=dim + 1, descending=True).values.flatten(dim, dim + 1)

    def lipschitz_bound(self) -> float:
        """1: a permutation of each sample's entries."""
        return 1.0

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, dim={self.dim}"


class MaxMin(nn.Module):
    """The paper's GroupSort of size 2 as its code computes it: along `dim` of size 2m, the halves
    a = x[:m], b = x[m:] become cat(max(a, b), min(a, b)) (channel i pairs with channel m + i).
    Shape-preserving.

    Raises:
        TypeError: dim not an int.
        ValueError: in the forward, dim out of range or of odd size.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"dim must be an int, got {type(dim).__name__} {dim!r}")
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _check_input(x, self.dim, 2, "MaxMin")
        a, b = x.chunk(2, dim=dim)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=dim)

    def lipschitz_bound(self) -> float:
        """1: a permutation of each sample's entries."""
        return 1.0

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
