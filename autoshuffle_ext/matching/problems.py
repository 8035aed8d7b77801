"""Quadratic assignment and graph matching: input checks, objectives, planted instances.

Convention (scipy's `quadratic_assignment`): for square A and B of size n and a permutation
`perm` (`P[i, perm[i]] = 1`, the package's convention), the objective is

    f(perm) = trace(A^T P B P^T) = sum_ij A[i, j] * B[perm[i], perm[j]].

Quadratic assignment (QAPLIB: A the flows, B the distances, or the reverse) minimises f.
Graph matching maximises it, since

    ||A - P B P^T||_F^2 = ||A||_F^2 + ||B||_F^2 - 2 f(perm),

so the permutation that best aligns B onto A maximises f.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..ops.channel_gather import is_permutation

__all__ = [
    "PlantedInstance",
    "as_problem_tensor",
    "check_pair",
    "matching_distance",
    "planted_instance",
    "qap_objective",
    "qaplib_like_instance",
]


def as_problem_tensor(X: Tensor | np.ndarray, name: str) -> Tensor:
    """X as a float64 tensor on its own device; [n, n] or [B, n, n], finite.

    Integer and boolean inputs (adjacency matrices) are accepted; everything is computed in
    float64 so that objectives of integer instances are exact.

    Raises:
        TypeError: X is neither a tensor nor an array, or is not real numeric.
        ValueError: X is not square ([n, n] or [B, n, n]), is empty, or holds NaN/inf.
    """
    if isinstance(X, np.ndarray):
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = torch.from_numpy(np.ascontiguousarray(X))
    if not isinstance(X, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(X).__name__}")
    if X.is_complex():
        raise TypeError(f"{name} must hold real numbers, got {X.dtype}")
    if X.dim() not in (2, 3) or X.shape[-1] != X.shape[-2] or X.shape[-1] == 0:
        raise ValueError(
            f"{name} must be a non-empty square matrix [n, n] or a batch [B, n, n], "
            f"got shape {tuple(X.shape)}"
        )
    X = X.detach().to(torch.float64)
    if not torch.isfinite(X).all():
        raise ValueError(f"{name} must be finite, got NaN or inf entries")
    return X


def check_pair(A: Tensor | np.ndarray, B: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """A and B as float64 tensors of one shape ([n, n] or [B, n, n]) on one device.

    Raises:
        TypeError / ValueError: as `as_problem_tensor`, or A and B differ in shape or device.
    """
    A = as_problem_tensor(A, "A")
    B = as_problem_tensor(B, "B")
    if A.shape != B.shape:
        raise ValueError(
            f"A and B must have the same shape, got A {tuple(A.shape)} and B {tuple(B.shape)}"
        )
    if A.device != B.device:
        raise ValueError(f"A and B must be on one device, got A on {A.device} and B on {B.device}")
    return A, B


def _check_perm(perm: Tensor, n: int, batch: tuple[int, ...]) -> Tensor:
    perm = torch.as_tensor(perm)
    if perm.shape != (*batch, n) or perm.dtype != torch.int64:
        raise ValueError(
            f"perm must be int64 of shape {(*batch, n)}, got {perm.dtype} {tuple(perm.shape)}"
        )
    if not bool(is_permutation(perm).all()):
        raise ValueError("perm must be a permutation of 0..n-1 in its last dimension")
    return perm


def _permuted(B: Tensor, perm: Tensor) -> Tensor:
    """P B P^T, i.e. B[perm[i], perm[j]], batched over leading dimensions."""
    rows = torch.take_along_dim(B, perm[..., :, None], dim=-2)
    return torch.take_along_dim(rows, perm[..., None, :], dim=-1)


def qap_objective(A: Tensor | np.ndarray, B: Tensor | np.ndarray, perm: Tensor) -> Tensor:
    """f(perm) = sum_ij A[i, j] B[perm[i], perm[j]] in float64 (0-d, or [B] for batches)."""
    A, B = check_pair(A, B)
    perm = _check_perm(perm.to(A.device), A.shape[-1], tuple(A.shape[:-2]))
    return (A * _permuted(B, perm)).sum(dim=(-2, -1))


def matching_distance(A: Tensor | np.ndarray, B: Tensor | np.ndarray, perm: Tensor) -> Tensor:
    """||A - P B P^T||_F^2 in float64 (0-d, or [B] for batches)."""
    A, B = check_pair(A, B)
    perm = _check_perm(perm.to(A.device), A.shape[-1], tuple(A.shape[:-2]))
    return (A - _permuted(B, perm)).square().sum(dim=(-2, -1))


@dataclass(frozen=True)
class PlantedInstance:
    """A graph A, a noisy relabelled copy B, and the planted `perm` with A ~ P B P^T."""

    A: Tensor
    B: Tensor
    perm: Tensor


def planted_instance(
    n: int,
    density: float = 0.5,
    noise: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PlantedInstance:
    """An Erdos-Renyi graph and a relabelled copy with a fraction `noise` of its pairs flipped.

    A is a symmetric 0/1 float64 adjacency matrix without self loops (edge probability
    `density`); the noisy copy flips every unordered pair independently with probability
    `noise`; B is the copy relabelled by a uniform random `perm`: B[perm[i], perm[j]] = copy[i, j].
    With noise 0 the planted permutation gives ||A - P B P^T|| = 0. Graph matching must find
    `perm` by maximising `qap_objective(A, B, perm)`.

    Raises:
        ValueError: n < 1, or density / noise outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for name, value in (("density", density), ("noise", noise)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    edges = (torch.rand(n, n, generator=generator) < density) & upper
    flips = (torch.rand(n, n, generator=generator) < noise) & upper
    A = edges | edges.T
    noisy = (edges ^ flips) | (edges ^ flips).T
    perm = torch.randperm(n, generator=generator)
    B = torch.empty(n, n, dtype=torch.bool)
    B[perm[:, None], perm[None, :]] = noisy
    return PlantedInstance(A.double().to(device), B.double().to(device), perm.to(device))


def qaplib_like_instance(
    n: int, kind: str = "grid", *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A random quadratic assignment instance (flows, distances) shaped like QAPLIB's.

    kind "grid" (like nug/had): Manhattan distances between the cells of a near-square grid
    and sparse symmetric integer flows in 0..9 (about 60% zero). kind "uniform" (like taiNNa):
    symmetric integer flows and distances uniform in 0..99, zero diagonal. kind "clustered"
    (like Taillard's structured taiNNb): locations in about sqrt(n) / 1.5 clusters (centres
    uniform on a 5000 x 5000 square, points uniform in discs of radius 500 around them), rounded
    Euclidean distances (up to about 7000), and symmetric flows that are 0 with probability 0.7
    and otherwise heavy-tailed, floor(10^(3.3 U)) for U uniform in [0, 1) (1 to 1995, half of
    them below 45). Minimise `qap_objective(flows, distances, perm)`.

    Raises:
        ValueError: n < 2 or an unknown kind.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")

    def symmetric_ints(high: int, zero_fraction: float) -> Tensor:
        X = torch.randint(1, high + 1, (n, n), generator=generator)
        X = X * (torch.rand(n, n, generator=generator) >= zero_fraction)
        X = X.triu(1)
        return (X + X.T).double()

    if kind == "grid":
        cols = int(np.ceil(np.sqrt(n)))
        cells = torch.arange(n)
        xy = torch.stack([cells // cols, cells % cols], dim=1).double()
        distances = torch.cdist(xy, xy, p=1)
        return symmetric_ints(9, 0.6), distances
    if kind == "uniform":
        return symmetric_ints(99, 0.0), symmetric_ints(99, 0.0)
    if kind == "clustered":
        return _clustered_flows(n, generator), _clustered_distances(n, generator)
    raise ValueError(f"kind must be 'grid', 'uniform' or 'clustered', got {kind!r}")


def _clustered_distances(n: int, generator: torch.Generator | None) -> Tensor:
    """Rounded Euclidean distances between n points in clusters (see `qaplib_like_instance`)."""
    clusters = max(2, round(np.sqrt(n) / 1.5))
    centres = 5000 * torch.rand(clusters, 2, generator=generator, dtype=torch.float64)
    which = torch.randint(0, clusters, (n,), generator=generator)
    radius = 500 * torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
    angle = 2 * np.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    offsets = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    points = centres[which] + offsets
    return torch.cdist(points, points).round().fill_diagonal_(0)


def _clustered_flows(n: int, generator: torch.Generator | None) -> Tensor:
    """Symmetric flows, 0 with probability 0.7, else floor(10^(3.3 U)); zero diagonal."""
    heavy = torch.floor(10 ** (3.3 * torch.rand(n, n, generator=generator, dtype=torch.float64)))
    flows = (heavy * (torch.rand(n, n, generator=generator) >= 0.7)).triu(1)
    return flows + flows.T
