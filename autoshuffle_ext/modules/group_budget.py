"""`GroupBudget`: one cost budget shared by many `DGConv2d` layers.

A per-layer budget forces every layer to the same group count. A shared budget lets the layers
trade: one layer may stay dense while others split further, as long as the weighted sum fits.
The term is `penalty_weight * relu(sum_l share_l * cost_l - budget)`, with cost_l = 1 / G_l the
layer's straight-through cost fraction and share_l its fraction of the layers' dense cost (the
caller's weights, e.g. each layer's dense multiply-adds), so `budget` is a fraction of what the
layers would cost as dense convs. Zero inside the budget; outside it, every gate is pushed in
proportion to how much its layer weighs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .dgconv import DEFAULT_BUDGET_WEIGHT, DGConv2d
from .structure import Regularizer

__all__ = ["GroupBudget"]


class GroupBudget(Regularizer):
    """The budget term of several `DGConv2d` layers, as one structure of the model.

    Args:
        layers: the layers it budgets (kept as plain references, not submodules: they stay
            where the model registered them). Their own per-layer `budget` should be None.
        weights: one positive weight per layer, its dense cost (e.g. multiply-adds of the dense
            conv at the layer's resolution); only the ratios matter.
        budget: the allowed weighted cost, a fraction in (0, 1] of the layers' dense cost.
        penalty_weight: lambda of the term.

    Raises:
        ValueError: no layers, a weight count that differs from the layer count, a weight that
            is not a positive finite number, budget outside (0, 1], penalty_weight negative or
            not finite.
        TypeError: a layer that is not a DGConv2d; a budget or penalty_weight that is not a
            real number (a bool or a tensor).
    """

    def __init__(
        self,
        layers: Sequence[DGConv2d],
        weights: Sequence[float],
        budget: float,
        penalty_weight: float = DEFAULT_BUDGET_WEIGHT,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must hold at least one DGConv2d, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, DGConv2d):
                raise TypeError(f"layers[{i}] must be a DGConv2d, got {type(layer).__name__}")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise TypeError(f"budget must be a real number, got {type(budget).__name__} {budget!r}")
        if isinstance(penalty_weight, bool) or not isinstance(penalty_weight, (int, float)):
            raise TypeError(
                "penalty_weight must be a real number, got "
                f"{type(penalty_weight).__name__} {penalty_weight!r}"
            )
        weights = [float(w) for w in weights]
        if len(weights) != len(layers):
            raise ValueError(
                f"weights must have one entry per layer ({len(layers)}), got {len(weights)}"
            )
        bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
        if bad:
            raise ValueError(f"weights must be positive and finite, got {bad[0]}")
        if not 0 < budget <= 1:
            raise ValueError(f"budget must lie in (0, 1], got {budget!r}")
        if not 0 <= penalty_weight < math.inf:
            raise ValueError(f"penalty_weight must be >= 0 and finite, got {penalty_weight!r}")
        # A tuple attribute is not registered: the layers are not counted, saved or frozen twice.
        self.layers = layers
        # Scaled by the largest first: a sum of huge weights (1e308) would overflow to inf and
        # every share to 0.
        largest = max(weights)
        scaled = [w / largest for w in weights]
        total = sum(scaled)
        self.shares = tuple(w / total for w in scaled)
        self.budget = float(budget)
        self.penalty_weight = float(penalty_weight)

    def cost_fraction(self) -> torch.Tensor:
        """sum_l share_l / G_l (0-d), differentiable in every layer's gates (straight-through)."""
        pairs = zip(self.shares, self.layers, strict=True)
        return torch.stack([share * layer.cost_fraction() for share, layer in pairs]).sum()

    def raw_penalty(self) -> torch.Tensor:
        """`relu(cost_fraction - budget)` (0-d); `freeze` removes the budget (the layers
        freeze on their own)."""
        return torch.relu(self.cost_fraction() - self.budget)

    def report(self) -> dict:
        """cost (the weighted cost fraction), budget, penalty (the unweighted excess), layers,
        groups (G of each layer, in order), distance (0: nothing relaxed)."""
        with torch.no_grad():
            cost = float(self.cost_fraction())
        return {
            "cost": cost,
            "budget": self.budget,
            "penalty": max(0.0, cost - self.budget),
            "layers": len(self.layers),
            "groups": [layer.num_groups() for layer in self.layers],
            "distance": 0.0,
        }

    def extra_repr(self) -> str:
        return f"layers={len(self.layers)}, budget={self.budget}"
