"""`grouped_masked_conv2d`: `conv2d(x, weight * mask)` for a binary DGConv mask, computed as the
grouped conv it equals (`GroupPlan`: permute, grouped conv, unpermute).

The forward and the input gradient run the grouped conv, 1/G of the dense cost. Only the mask's
gradient needs the dense weight gradient (its entries outside the blocks say what opening a gate
would do); it is computed with `torch.nn.grad.conv2d_weight` when the mask requires grad, and
otherwise the weight gradient is the grouped one. The plain masked dense conv is the reference in
the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.grad import conv2d_input, conv2d_weight

from .dgconv_mask import GroupPlan

__all__ = ["block_weight", "grouped_masked_conv2d", "unblock_weight"]

_gather_op = torch.ops.autoshuffle_ext.channel_gather.default


def _gather(x: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    # The package's gather keeps x's memory format (index_select would drop channels_last).
    return x if perm is None else _gather_op(x, perm)


def block_weight(weight: torch.Tensor, plan: GroupPlan) -> torch.Tensor:
    """The grouped conv's weight [out, in / G, kh, kw]: the diagonal blocks of `weight`
    ([out, in, kh, kw]) in the plan's permuted channel order (entries outside them dropped)."""
    if plan.out_src is not None:
        weight = weight.index_select(0, plan.out_src).index_select(1, plan.in_src)
    g = plan.groups
    if g == 1:
        return weight
    out, cin, kh, kw = weight.shape
    blocks = weight.reshape(g, out // g, g, cin // g, kh, kw)
    diagonal = torch.diagonal(blocks, dim1=0, dim2=2)  # [out / G, in / G, kh, kw, G]
    return diagonal.permute(4, 0, 1, 2, 3).reshape(out, cin // g, kh, kw)


def unblock_weight(grouped: torch.Tensor, plan: GroupPlan) -> torch.Tensor:
    """The inverse of `block_weight`: [out, in / G, kh, kw] back to [out, in, kh, kw] in the
    original channel order, zero outside the blocks."""
    g = plan.groups
    if g == 1:
        dense = grouped
    else:
        out, cin_g, kh, kw = grouped.shape
        dense = grouped.new_zeros(g, out // g, g, cin_g, kh, kw)
        blocks = grouped.reshape(g, out // g, cin_g, kh, kw).permute(1, 2, 3, 4, 0)
        torch.diagonal(dense, dim1=0, dim2=2).copy_(blocks)
        dense = dense.reshape(out, g * cin_g, kh, kw)
    if plan.out_perm is not None:
        dense = dense.index_select(0, plan.out_perm).index_select(1, plan.in_perm)
    return dense


def _forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    plan: GroupPlan,
    conv: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
) -> torch.Tensor:
    if bias is not None and plan.out_src is not None:
        bias = bias.index_select(0, plan.out_src)
    y = F.conv2d(_gather(x, plan.in_src), block_weight(weight, plan), bias, *conv, plan.groups)
    return _gather(y, plan.out_perm)


class _GroupedMaskedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, mask, bias, plan, conv):
        ctx.save_for_backward(x, weight, mask)
        ctx.plan, ctx.conv = plan, conv
        return _forward(x, weight, bias, plan, conv)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, mask = ctx.saved_tensors
        plan, conv = ctx.plan, ctx.conv
        need_x, need_w, need_mask, need_bias = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_mask = grad_bias = None
        grad_yp = _gather(grad_y, plan.out_src)
        if need_x:
            grad_xp = conv2d_input(x.shape, block_weight(weight, plan), grad_yp, *conv, plan.groups)
            grad_x = _gather(grad_xp, plan.in_perm)
        if need_mask:
            dense = conv2d_weight(x, weight.shape, grad_y, *conv)
            grad_mask = (dense * weight).sum(dim=(2, 3))
            if need_w:
                grad_w = dense * mask[:, :, None, None]
        elif need_w:
            out, cin, kh, kw = weight.shape
            shape = (out, cin // plan.groups, kh, kw)
            xp = _gather(x, plan.in_src)
            grad_w = unblock_weight(conv2d_weight(xp, shape, grad_yp, *conv, plan.groups), plan)
        if need_bias:
            grad_bias = grad_y.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_mask, grad_bias, None, None


def grouped_masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    bias: torch.Tensor | None,
    plan: GroupPlan,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """`conv2d(x, weight * mask[:, :, None, None], bias, stride, padding, dilation)`, exactly, for
    the mask of `plan` (0/1, block diagonal after the plan's permutations).

    Args:
        x: [N, in, H, W]; weight: [out, in, kh, kw]; bias: [out] or None.
        mask: [out, in] in weight's dtype, the mask as a differentiable function of the gates
            (its values must be the plan's 0/1 pattern); None when no gradient is wanted for it,
            which spares the dense weight gradient.

    Returns [N, out, H', W'] in the memory format `F.conv2d` gives for x (the gathers keep it).
    Arguments are not checked: the caller (`DGConv2d`) builds them consistently. Once
    differentiable.
    """
    conv = (stride, padding, dilation)
    tensors = (x, weight, mask, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _GroupedMaskedConv.apply(x, weight, mask, bias, plan, conv)
    return _forward(x, weight, bias, plan, conv)
