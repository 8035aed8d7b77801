"""The ShuffleNet constructors' structure arguments (`shuffle=`, `pointwise=`...) as structure
configs: each model is built plain (fixed shuffle, fixed groups) and converted by the one pass,
exactly as a user's network is."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..modules import GroupsConfig, ShuffleConfig, StructureConfig, convert
from ..splines import ACTIVATION_KINDS, SplineConfig

__all__ = ["activation_config", "groups_config", "shuffle_config", "with_structures"]

# The constructors' pointwise_options keys, as GroupsConfig fields.
_POINTWISE_OPTIONS = {
    "gate_init": "gate_init",
    "budget": "layer_budget",
    "penalty_weight": "budget_weight",
    "init_groups": "init_groups",
}


def shuffle_config(
    kind: str, options: dict | None
) -> tuple[ShuffleConfig | None, torch.Generator | None]:
    """The config of `shuffle=kind, shuffle_options=options` (None for "fixed": the plain model
    has it), and the generator the options name.

    Raises:
        TypeError: an option that is not a ShuffleConfig field.
    """
    options = dict(options or {})
    generator = options.pop("generator", None)
    if "iters" in options:  # SinkhornShuffle's name for it
        options["sinkhorn_iters"] = options.pop("iters")
    if kind == "fixed":
        return None, generator
    try:
        return ShuffleConfig(kind=kind, **options), generator
    except TypeError as error:
        raise TypeError(f"shuffle_options: {error}") from None


def groups_config(
    pointwise: str, options: dict | None, budget: float | None, budget_weight: float | None
) -> GroupsConfig | None:
    """The config of `pointwise="learned"` with its options (None for "fixed").

    Raises:
        TypeError: an option that DGConv2d's conversion does not take.
        ValueError: budget without pointwise="learned", or both budgets.
    """
    if pointwise != "learned":
        if budget is not None:
            raise ValueError(f"budget needs pointwise='learned', got pointwise={pointwise!r}")
        return None
    fields: dict = {}
    for key, value in (options or {}).items():
        if key not in _POINTWISE_OPTIONS:
            raise TypeError(f"pointwise_options: unexpected keyword argument {key!r}")
        fields[_POINTWISE_OPTIONS[key]] = value
    if budget is not None:
        if fields.get("layer_budget") is not None:
            raise ValueError(
                "give either budget (the model's) or pointwise_options['budget'] (each "
                "layer's), not both"
            )
        fields["budget"] = budget
    if budget_weight is not None:
        fields["budget_weight"] = budget_weight
    return GroupsConfig(kind="learned", **fields)


def activation_config(activation: str, options: dict | None) -> SplineConfig | None:
    """The config of `activation="spline"` with its options (`SplineConfig` fields); None for
    "relu" (the plain model's).

    Raises:
        ValueError: an unknown activation; TypeError: an option that is not a field.
    """
    if activation not in ACTIVATION_KINDS:
        raise ValueError(f"activation must be one of {ACTIVATION_KINDS}, got {activation!r}")
    if activation == "relu":
        if options:
            raise ValueError(f"activation_options need activation='spline', got {options}")
        return None
    return SplineConfig(**(options or {}))


def with_structures(
    model: nn.Module,
    configs: Sequence[StructureConfig | None],
    input_side: int,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """`model` converted by `configs` (Nones skipped); it runs once on a [1, 3, side, side]
    input when a config replaces modules (their sizes weigh a shared budget).

    Raises:
        ValueError: a config that `requires_sites` (asked for with other than its defaults)
            converted nothing in the model: its flags would do nothing.
    """
    configs = [c for c in configs if c is not None]
    if not configs:
        return model
    example = None
    if any(c.sites != "shuffles" for c in configs):
        first = next(model.parameters())
        example = torch.zeros(1, 3, input_side, input_side, dtype=first.dtype)
    converted, report = convert(model, configs, example, generator=generator, return_report=True)
    counts = report.counts()
    idle = [c for c in configs if not counts.get(c.name) and c.requires_sites()]
    if idle:
        raise ValueError(
            "; ".join(
                f"{type(c).__name__} ({c.name}) found nothing to convert in {type(model).__name__}"
                for c in idle
            )
        )
    return converted
