"""Certified robustness of a Lipschitz network from its logits (Tsuzuku, Sato, Sugiyama, NeurIPS
2018; the margin rule of Li et al.'s code).

If the logits z(x) are L-Lipschitz in l2, a perturbation of norm eps changes the difference of
two logits by at most sqrt(2) L eps. So a prediction whose top logit beats every other by more
than sqrt(2) L eps cannot change within radius eps: its certified radius is
(z_top - z_second) / (sqrt(2) L).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ._checks import check_logits, check_real

__all__ = ["certified_accuracy", "certified_radius", "certify", "margin_for_radius"]

SQRT2 = math.sqrt(2.0)


def margin_for_radius(eps: float, lipschitz: float = 1.0) -> float:
    """sqrt(2) L eps: the logit margin that certifies radius eps (the hinge loss's margin).

    Raises:
        TypeError: eps or lipschitz not a number. ValueError: eps < 0, lipschitz <= 0.
    """
    eps = check_real("eps", eps, low=0.0)
    lipschitz = check_real("lipschitz", lipschitz, low=0.0, open_low=True)
    return SQRT2 * lipschitz * eps


def certified_radius(
    logits: torch.Tensor, labels: torch.Tensor | None = None, lipschitz: float = 1.0
) -> torch.Tensor:
    """The l2 radius within which each prediction provably does not change: [N, K] -> [N].

    Without labels, the radius of the predicted class: (z_top - z_second) / (sqrt(2) L). With
    labels, the radius of the true class: max(0, z_y - max_{j != y} z_j) / (sqrt(2) L), 0 where
    the prediction is wrong. `lipschitz` is L, a bound on the Lipschitz constant of the logits
    (1 for the package's LipConvNets; `lipschitz_bound` computes one). Same dtype as logits.

    Raises:
        TypeError: logits not floating point, labels not int64, lipschitz not a number.
        ValueError: logits not [N, K >= 2], labels not [N] in [0, K) on logits' device,
            lipschitz <= 0.
    """
    logits = check_logits(logits, labels)
    lipschitz = check_real("lipschitz", lipschitz, low=0.0, open_low=True)
    if labels is None:
        top2 = logits.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        true = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf"))
        margin = (true - others.amax(dim=1)).clamp_min(0)
    return margin / (SQRT2 * lipschitz)


def certify(
    logits: torch.Tensor,
    eps: float,
    labels: torch.Tensor | None = None,
    lipschitz: float = 1.0,
) -> torch.Tensor:
    """Which predictions are certified at l2 radius eps: bool [N], the margin (top logit over
    every other; the true logit with labels, which also requires a correct prediction) strictly
    larger than sqrt(2) L eps. Arguments and errors as `certified_radius` (eps >= 0 a number)."""
    eps = check_real("eps", eps, low=0.0)
    margin = certified_radius(logits, labels, lipschitz) * (SQRT2 * lipschitz)
    return margin > SQRT2 * lipschitz * eps


@torch.no_grad()
def certified_accuracy(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps: float,
    *,
    lipschitz: float | None = None,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """(clean accuracy, certified accuracy at l2 radius eps) of `model` over `data`.

    Args:
        model: maps x [N, ...] to logits [N, K]; run in evaluation mode (its mode is restored).
        data: a loader or any iterable of (x, y) batches, y int64 [N].
        eps: the l2 radius (>= 0).
        lipschitz: L, a bound on the model's Lipschitz constant; None computes
            `lipschitz_bound(model)` (so the certificate holds for what the model is, not for
            what it should be).
        device: where the batches go; None: the device of the model's first parameter (or
            buffer), or where they are for a model without either.

    A sample counts as certified when it is classified correctly and its true logit beats every
    other by more than sqrt(2) L eps (`certify`).

    Raises:
        TypeError: model not an nn.Module, a batch not a pair of tensors.
        ValueError: data empty, eps < 0, bad logits or labels (see `certified_radius`).
    """
    from .bound import lipschitz_bound

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    eps = check_real("eps", eps, low=0.0)
    L = lipschitz_bound(model) if lipschitz is None else lipschitz
    L = check_real("lipschitz", L, low=0.0, open_low=True)
    if device is None:
        first = next(model.parameters(), None)
        first = first if first is not None else next(model.buffers(), None)
        device = None if first is None else first.device
    was_training = model.training
    model.eval()
    total = correct = certified = 0
    try:
        for index, batch in enumerate(data):
            if not (
                isinstance(batch, (tuple, list))
                and len(batch) == 2
                and all(isinstance(t, torch.Tensor) for t in batch)
            ):
                raise TypeError(
                    f"data must yield (x, y) pairs of tensors, got {type(batch).__name__} at "
                    f"batch {index}"
                )
            x, y = batch
            if device is not None:
                x, y = x.to(device), y.to(device)
            logits = model(x)
            check_logits(logits, y)
            correct += int((logits.argmax(dim=1) == y).sum())
            certified += int(certify(logits, eps, y, L).sum())
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("data must hold at least one sample, got none")
    return correct / total, certified / total
