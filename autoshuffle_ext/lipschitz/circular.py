"""The circular convolution the orthogonal layers use, and its exact singular values.

Padding: a k x k kernel pads k // 2 before and k - 1 - k // 2 after, in both spatial dims, by
wrapping around (odd k: k // 2 on both sides, as `nn.Conv2d(padding=k // 2,
padding_mode="circular")`; even k, e.g. the 2 x 2 kernels after an invertible downsampling: one
less after). The output has the input's spatial size, and the operator is a circular
convolution on the H x W torus, whose singular values the FFT gives exactly (Sedghi, Gupta and
Long, ICLR 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_tensor

__all__ = ["circular_conv2d", "circular_conv_singular_values", "circular_padding"]


def circular_padding(kernel_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, right, top, bottom), `F.pad`'s order, of a (kh, kw) kernel."""
    kh, kw = kernel_size
    return kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2


def circular_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """[N, in, H, W] -> [N, out, H, W]: `weight` [out, in, kh, kw] applied with circular
    padding (`circular_padding`), stride 1. The shapes are `F.conv2d`'s to check (and H >= kh - 1,
    W >= kw - 1 `F.pad`'s)."""
    pad = circular_padding(weight.shape[-2:])
    if any(pad):
        x = F.pad(x, pad, mode="circular")
    return F.conv2d(x, weight, bias)


@torch.no_grad()
def circular_conv_singular_values(
    weight: torch.Tensor, input_size: tuple[int, int]
) -> torch.Tensor:
    """The singular values of the circular convolution by `weight` [out, in, kh, kw] on an
    [in, H, W] input: [H, W, min(out, in)], one set per spatial frequency, descending, in the
    real dtype of weight (float64 for float64). Their maximum is the operator norm; the map is
    orthogonal (out == in) exactly when all are 1.

    Raises:
        TypeError: weight not a floating point tensor.
        ValueError: weight not 4-D, input_size not two ints at least the kernel's size.
    """
    weight = check_tensor("weight", weight)
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape [out, in, kh, kw], got {tuple(weight.shape)}")
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in input_size)
        or input_size[0] < weight.shape[2]
        or input_size[1] < weight.shape[3]
    ):
        raise ValueError(
            f"input_size must be two ints (H, W) at least the kernel's size "
            f"{tuple(weight.shape[2:])}, got {input_size!r}"
        )
    # The transfer matrix at frequency (u, v) is sum_ab W[:, :, a, b] exp(+-2 pi i (ua/H + vb/W));
    # the sign of the exponent and the padding's offset change no singular value.
    transfer = torch.fft.fft2(weight, s=tuple(input_size))  # [out, in, H, W], complex
    return torch.linalg.svdvals(transfer.permute(2, 3, 0, 1))
