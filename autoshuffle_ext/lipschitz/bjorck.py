"""Björck orthonormalisation (Björck and Bowie, SIAM J. Numer. Anal. 1971), batched.

    W <- (1 + beta) W - beta W (W^T W)

drives every singular value of W toward 1 (it converges for singular values in (0, sqrt(3))), so
after a few tens of steps W is the orthonormal factor of its polar decomposition: the closest
matrix with orthonormal columns (rows, for a wide W). W is first divided by an estimate of its
largest singular value: a power iteration without gradient (the paper's choice), or the
Frobenius norm (a differentiable, guaranteed bound that converges more slowly).

Everything works on a stack [..., m, n]: all the matrices of a layer are one batched op, each
step two batched matrix products.
"""

from __future__ import annotations

import torch

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "BJORCK_BETA",
    "DEFAULT_BJORCK_ITERS",
    "DEFAULT_POWER_ITERS",
    "bjorck_orthonormalize",
    "orthogonality_error",
    "spectral_norm_estimate",
]

BJORCK_BETA = 0.5
DEFAULT_BJORCK_ITERS = 20  # the reference code's default
DEFAULT_POWER_ITERS = 10
SCALINGS = ("power", "frobenius", "none")

# One fixed start vector per (n, dtype, device): the estimate is a deterministic function of W.
_START: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _start_vector(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (n, dtype, device)
    v = _START.get(key)
    if v is None:
        g = torch.Generator().manual_seed(0x5EED)
        v = torch.randn(n, 1, generator=g, dtype=torch.float64)
        v = (v / torch.linalg.vector_norm(v)).to(dtype=dtype, device=device)
        _START[key] = v
    return v


def _check_matrices(name: str, W: object) -> torch.Tensor:
    W = check_tensor(name, W)
    if W.dim() < 2:
        raise ValueError(f"{name} must have shape [..., m, n], got {tuple(W.shape)}")
    return W


@torch.no_grad()
def spectral_norm_estimate(W: torch.Tensor, iters: int = DEFAULT_POWER_ITERS) -> torch.Tensor:
    """Largest singular value of each matrix of W [..., m, n] by `iters` power iterations from a
    fixed pseudo-random start (deterministic), without gradient. Returns [...] in W's dtype.

    An estimate from below: it approaches sigma_max as the iterations grow.

    Raises:
        TypeError: W not a floating point tensor, iters not an int.
        ValueError: W of fewer than 2 dims, iters < 1.
    """
    W = _check_matrices("W", W)
    check_int("iters", iters, 1)
    v = _start_vector(W.shape[-1], W.dtype, W.device).expand(*W.shape[:-2], -1, -1)
    tiny = torch.finfo(W.dtype).tiny
    for _ in range(iters):
        u = W @ v
        u = u / torch.linalg.vector_norm(u, dim=-2, keepdim=True).clamp_min(tiny)
        v = W.mT @ u
        v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True).clamp_min(tiny)
    return torch.linalg.vector_norm(W @ v, dim=(-2, -1))


def bjorck_orthonormalize(
    W: torch.Tensor,
    iters: int = DEFAULT_BJORCK_ITERS,
    beta: float = BJORCK_BETA,
    *,
    scaling: str = "power",
    power_iters: int = DEFAULT_POWER_ITERS,
) -> torch.Tensor:
    """The orthonormalised W: [..., m, n] -> [..., m, n], differentiable in W.

    A tall W (m >= n) ends with orthonormal columns, a wide one with orthonormal rows (the
    iteration runs on its transpose, so that W^T W is the small Gram matrix).

    Args:
        W: the matrices, a floating point tensor [..., m, n] (a stack is one batched op).
        iters: Björck steps (each: two batched matrix products).
        beta: the step's coefficient (0.5: first order Björck).
        scaling: what W is divided by first: "power" (`spectral_norm_estimate`, no gradient
            through it: the paper's), "frobenius" (the Frobenius norm of each matrix, with its
            gradient), or "none" (W's singular values must already lie in (0, sqrt(3))).
        power_iters: power iterations of the "power" scaling.

    Raises:
        TypeError: W not a floating point tensor, iters/power_iters not ints, beta not a number.
        ValueError: W of fewer than 2 dims, iters < 0, beta not in (0, 1], power_iters < 1,
            an unknown scaling.
    """
    W = _check_matrices("W", W)
    check_int("iters", iters, 0)
    beta = check_real("beta", beta, low=0.0, high=1.0, open_low=True)
    check_int("power_iters", power_iters, 1)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    wide = W.shape[-2] < W.shape[-1]
    if wide:
        W = W.mT
    tiny = torch.finfo(W.dtype).tiny
    if scaling == "power":
        W = W / spectral_norm_estimate(W, power_iters).clamp_min(tiny)[..., None, None]
    elif scaling == "frobenius":
        W = W / torch.linalg.matrix_norm(W, keepdim=True).clamp_min(tiny)
    batch, (m, n) = W.shape[:-2], W.shape[-2:]
    W = W.reshape(-1, m, n)
    for _ in range(iters):
        # (1 + beta) W - beta W (W^T W), as one fused batched product-and-add.
        W = torch.baddbmm(W, W, W.mT @ W, beta=1 + beta, alpha=-beta)
    W = W.reshape(*batch, m, n)
    return W.mT if wide else W


@torch.no_grad()
def orthogonality_error(W: torch.Tensor) -> torch.Tensor:
    """max |sigma - 1| over the singular values of each matrix of W [..., m, n]: 0 exactly when
    the columns (rows, for a wide W) are orthonormal. Returns [...], in W's dtype.

    Raises:
        TypeError: W not a floating point tensor. ValueError: W of fewer than 2 dims.
    """
    W = _check_matrices("W", W)
    if W.numel() == 0:
        return W.new_zeros(W.shape[:-2])
    return (torch.linalg.svdvals(W) - 1).abs().amax(dim=-1)
