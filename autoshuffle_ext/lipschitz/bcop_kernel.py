"""The orthogonal convolution kernel of BCOP (Block Convolution Orthogonal Parameterization; Li,
Haghgoo, Chen, Duvenaud, Jacobsen, Grosse, "Preventing Gradient Attenuation in Lipschitz
Constrained Convolutional Networks", NeurIPS 2019), from orthonormal c x c matrices.

A k x k kernel takes 2(k - 1) + 1 of them. The first is the 1 x 1 part H; each of the others
gives a symmetric projector P = M_h M_h^T from its first c // 2 columns M_h. A pair (P, Q) makes
the 2 x 2 block kernel

    B[:, :, a, b] = P_a Q_b,   P_0 = P, P_1 = I - P, Q_0 = Q, Q_1 = I - Q,

whose circular convolution is orthogonal: at spatial frequency (w, z) (|w| = |z| = 1) its
transfer matrix is (P + w (I - P)) (Q + z (I - Q)), a product of unitary matrices. Composing the
k - 1 blocks (the convolution of their kernels: the product of their transfer matrices) and H
gives a k x k kernel whose operator is orthogonal for every input size. With in != out the
kernel is c x c cropped to out x in, which keeps all its singular values at 1 (the transfer
matrix keeps orthonormal rows, or columns).

Everything is batched: the projectors in one product, the blocks in one einsum, and the blocks
composed pairwise, all pairs of a round in one grouped convolution (log2(k - 1) rounds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bcop_kernel", "block_kernels", "compose_kernels", "num_bcop_matrices"]


def num_bcop_matrices(kernel_size: int) -> int:
    """2 (k - 1) + 1: H and one projector per axis for each of the k - 1 blocks."""
    return 2 * (kernel_size - 1) + 1


def block_kernels(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """The 2 x 2 orthogonal block kernels of the projector pairs: P, Q [T, c, c] ->
    [T, c, c, 2, 2] with block[t, :, :, a, b] = P_a[t] @ Q_b[t] (see the module docstring)."""
    eye = torch.eye(P.shape[-1], dtype=P.dtype, device=P.device)
    Ps = torch.stack([P, eye - P], dim=1)  # [T, 2, c, c]
    Qs = torch.stack([Q, eye - Q], dim=1)
    return torch.einsum("tamn,tbnj->tmjab", Ps, Qs)


def _compose_pairs(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A[t] convolved with B[t] for every t: [T, c, c, s, s] twice -> [T, c, c, 2s-1, 2s-1], the
    kernel of "B's convolution, then A's": K[o, i, p] = sum_m sum_d A[o, m, d] B[m, i, p - d].

    One grouped `F.conv2d` (a cross-correlation, hence A flipped): B[t] is the input with the
    input channel i as the batch and (t, m) as the channels, zero padded by s - 1."""
    T, c, _, s, _ = A.shape
    x = B.permute(2, 0, 1, 3, 4).reshape(c, T * c, s, s)  # [i, (t, m), s, s]
    x = F.pad(x, (s - 1, s - 1, s - 1, s - 1))
    w = A.flip(-1, -2).reshape(T * c, c, s, s)  # [(t, o), m, s, s]
    out = F.conv2d(x, w, groups=T)  # [i, (t, o), 2s-1, 2s-1]
    return out.reshape(c, T, c, 2 * s - 1, 2 * s - 1).permute(1, 2, 0, 3, 4)


def compose_kernels(kernels: torch.Tensor) -> torch.Tensor:
    """The kernel of the chain of convolutions by kernels[0], ..., kernels[T - 1] (square,
    c x c, all s x s): [T, c, c, s, s] -> [c, c, T (s - 1) + 1, T (s - 1) + 1]. Pairs are
    composed a round at a time, each round one grouped convolution; an odd one out is zero
    padded at the end (a composition with the identity) and the result cropped."""
    T, s = kernels.shape[0], kernels.shape[-1]
    size = T * (s - 1) + 1
    while kernels.shape[0] > 1:
        n = kernels.shape[0]
        pairs = _compose_pairs(kernels[0 : n - 1 : 2], kernels[1:n:2])
        if n % 2:
            last = kernels[-1:]
            grow = pairs.shape[-1] - last.shape[-1]
            pairs = torch.cat([pairs, F.pad(last, (0, grow, 0, grow))])
        kernels = pairs
    return kernels[0, :, :, :size, :size]


def bcop_kernel(
    ortho: torch.Tensor, in_channels: int, out_channels: int, kernel_size: int
) -> torch.Tensor:
    """The BCOP kernel [out, in, k, k] from `ortho` [2(k-1)+1, c, c], orthonormal matrices with
    c = max(in, out) (`bjorck_orthonormalize` of the layer's parameters). Differentiable.

    With out <= in the 1 x 1 part H (ortho[0] cropped to out x in) comes last (on the output
    side), else first: the transfer matrix is then H_crop times unitaries (orthonormal rows) or
    unitaries times H_crop (orthonormal columns).
    """
    c = max(in_channels, out_channels)
    if ortho.shape != (num_bcop_matrices(kernel_size), c, c):
        raise ValueError(
            f"ortho must have shape {(num_bcop_matrices(kernel_size), c, c)} for in_channels="
            f"{in_channels}, out_channels={out_channels}, kernel_size={kernel_size}, "
            f"got {tuple(ortho.shape)}"
        )
    H = ortho[0, :out_channels, :in_channels]
    if kernel_size == 1:
        return H[:, :, None, None]
    half = ortho[1:, :, : c // 2]
    projectors = half @ half.mT  # [2(k-1), c, c], symmetric, rank c // 2
    blocks = compose_kernels(block_kernels(projectors[0::2], projectors[1::2]))
    if out_channels <= in_channels:
        return torch.einsum("om,mihw->oihw", H, blocks)
    return torch.einsum("omhw,mi->oihw", blocks, H)
