"""Argument checks shared by the Lipschitz layers: each raises at once, naming the argument, what
was expected and what was got."""

from __future__ import annotations

import math

import torch

__all__ = ["check_int", "check_logits", "check_real", "check_tensor"]


def check_int(name: str, value: object, minimum: int) -> int:
    """`value` as an int >= minimum; TypeError for a non-int (bools included), else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(
    name: str, value: object, *, low: float = -math.inf, high: float = math.inf, open_low=False
) -> float:
    """`value` as a finite float in [low, high] ((low, high] with open_low); TypeError for a
    non-number (bools and tensors included), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    inside = (value > low if open_low else value >= low) and value <= high
    if not (math.isfinite(value) and inside):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be finite and lie in {bracket}{low}, {high}], got {value}")
    return float(value)


def check_tensor(name: str, value: object, *, floating: bool = True) -> torch.Tensor:
    """`value` as a tensor (a floating one by default); TypeError otherwise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating point tensor, got {value.dtype}")
    return value


def check_logits(logits: object, labels: object | None) -> torch.Tensor:
    """logits as a floating [N, K >= 2] tensor; labels (if given) int64 [N] in [0, K) on its
    device. TypeError / ValueError otherwise."""
    logits = check_tensor("logits", logits)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape [N, num_classes] with num_classes >= 2, got "
            f"{tuple(logits.shape)}"
        )
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
            got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise TypeError(f"labels must be an int64 tensor, got {got}")
        if labels.shape != logits.shape[:1]:
            raise ValueError(
                f"labels must have shape [{logits.shape[0]}] (one per row of logits), got "
                f"{tuple(labels.shape)}"
            )
        if labels.device != logits.device:
            raise ValueError(
                f"labels must be on logits' device {logits.device}, got {labels.device}"
            )
        if labels.numel() and bool(((labels < 0) | (labels >= logits.shape[1])).any()):
            raise ValueError(
                f"labels must lie in [0, {logits.shape[1] - 1}], got values "
                f"{int(labels.min())}..{int(labels.max())}"
            )
    return logits
