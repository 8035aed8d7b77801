"""The multi-class hinge loss that trains certifiably robust Lipschitz networks: every other
logit is pushed at least `margin` below the true one (margin sqrt(2) L eps certifies radius eps,
`margin_for_radius`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_logits, check_real

__all__ = ["multiclass_hinge_loss"]


def multiclass_hinge_loss(
    logits: torch.Tensor, labels: torch.Tensor, margin: float, reduction: str = "mean"
) -> torch.Tensor:
    """`sum_{j != y} max(0, margin - (z_y - z_j)) / K` per sample ([N, K] logits, int64 [N]
    labels), averaged over the batch ("mean", 0-d), summed ("sum") or per sample ("none", [N]):
    `F.multi_margin_loss`, the loss of Li et al.'s code (their margin: sqrt(2) eps).

    Raises:
        TypeError: logits not floating point, labels not int64, margin not a number.
        ValueError: bad shapes or labels (see `certified_radius`), margin < 0, an unknown
            reduction.
    """
    check_logits(logits, labels)
    margin = check_real("margin", margin, low=0.0)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return F.multi_margin_loss(logits, labels, margin=margin, reduction=reduction)
