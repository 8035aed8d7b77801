"""`GroupsConfig`: convolutions become `DGConv2d` layers that learn their group count, started
on the groups they had, optionally under one shared cost budget; and their training flags."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .dgconv import DEFAULT_BUDGET_WEIGHT, DEFAULT_GATE_INIT, DGConv2d
from .group_budget import GroupBudget
from .structure_config import ModuleSite, StructureConfig, flags_need, register_config

__all__ = ["GROUPS_KINDS", "GroupsConfig"]

GROUPS_KINDS = ("fixed", "learned")
# The flags that only --groups learned reads.
_LEARNED_FLAGS = ["budget", "budget_weight", "gate_init", "gate_lr"]


@register_config
@dataclass
class GroupsConfig(StructureConfig):
    """Options of the learned group counts.

    kind: "learned" replaces every matching conv; "fixed" leaves the convs as they are.
    kernel_size: the convs it replaces: k x k (1: the pointwise convs, ShuffleNet's groups).
    budget: one budget for all the replaced convs together (a `GroupBudget` registered on the
        model as `group_budget`): the fraction in (0, 1] of their dense multiply-adds the model
        may keep, weighed by each conv's multiply-adds on the example input (which it needs).
    budget_weight: lambda of the budget term (the shared one, or each layer's).
    gate_init: |gate parameter| at the start (smaller: group counts move sooner).
    lr: peak learning rate of the gates (None: the optimizer's).
    layer_budget: a budget of each layer on its own (`DGConv2d(budget=...)`) instead of the
        shared one: every layer is then pushed to the same cost.
    init_groups: start every layer on this group count instead of its conv's (the conv's
        weights are then not carried over: a fresh layer).
    """

    kind: str = "learned"
    kernel_size: int = 1
    budget: float | None = None
    budget_weight: float = DEFAULT_BUDGET_WEIGHT
    gate_init: float = DEFAULT_GATE_INIT
    lr: float | None = None
    layer_budget: float | None = None
    init_groups: int | None = None

    name: ClassVar[str] = "groups"

    def problems(self) -> list[str]:
        problems = []
        if self.kind not in GROUPS_KINDS:
            problems.append(f"kind must be one of {GROUPS_KINDS}, got {self.kind!r}")
        if self.kernel_size < 1:
            problems.append(f"kernel_size must be >= 1, got {self.kernel_size}")
        if self.budget is not None and not 0 < self.budget <= 1:
            problems.append(f"budget must lie in (0, 1], got {self.budget}")
        if self.layer_budget is not None and not 0 < self.layer_budget <= 1:
            problems.append(f"layer_budget must lie in (0, 1], got {self.layer_budget}")
        if self.budget is not None and self.layer_budget is not None:
            problems.append(
                "give either budget (the model's) or layer_budget (each layer's), not both"
            )
        if self.init_groups is not None and self.init_groups < 1:
            problems.append(f"init_groups must be >= 1, got {self.init_groups}")
        if not 0 <= self.budget_weight < math.inf:
            problems.append(f"budget_weight must be >= 0 and finite, got {self.budget_weight}")
        if not 0 < self.gate_init < math.inf:
            problems.append(f"gate_init must be > 0 and finite, got {self.gate_init}")
        elif self.gate_init > torch.finfo(torch.float32).max:
            problems.append(
                f"gate_init must be at most {torch.finfo(torch.float32).max:g} (the gates are "
                f"float32), got {self.gate_init:g}"
            )
        if self.lr is not None and not 0 <= self.lr < math.inf:
            problems.append(f"lr must be >= 0 and finite, got {self.lr}")
        return problems

    def matches(self, module: nn.Module, site: ModuleSite) -> bool:
        return (
            self.kind == "learned"
            and type(module) is nn.Conv2d
            and module.kernel_size == (self.kernel_size, self.kernel_size)
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )

    def build(self, module: nn.Module, site: ModuleSite) -> nn.Module:
        options = {"gate_init": self.gate_init, "penalty_weight": self.budget_weight}
        if self.layer_budget is not None:
            options["budget"] = self.layer_budget
        if self.init_groups is not None:
            options["init_groups"] = self.init_groups
        layer = DGConv2d.from_conv(module, **options)
        layer.lr = self.lr
        return layer

    def finish(self, model: nn.Module, built: list[tuple[ModuleSite, nn.Module]]) -> list[str]:
        if self.budget is None or not built:
            return []
        missing = [site.name for site, _ in built if site.output_shape is None]
        if missing:
            raise ValueError(
                f"GroupsConfig(budget={self.budget}) weighs each conv by its multiply-adds on "
                f"example_input; give one (no call seen for {', '.join(missing[:3])})"
            )
        layers = [layer for _, layer in built]
        weights = [
            math.prod(site.output_shape[1:]) * layer.in_channels * math.prod(layer.kernel_size)
            for site, layer in built
        ]
        name = "group_budget"
        while hasattr(model, name):
            name = "_" + name
        budget = GroupBudget(layers, weights, self.budget, penalty_weight=self.budget_weight)
        model.add_module(name, budget)
        return [
            f"{name}: one budget of {self.budget:g} of the dense multiply-adds over "
            f"{len(layers)} learned group counts"
        ]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = cls()
        group = parser.add_argument_group("learned group counts (DGConv)")
        group.add_argument(
            "--groups",
            default="fixed",
            choices=GROUPS_KINDS,
            help="group counts of the pointwise convs: fixed (the model's) or learned "
            "(DGConv2d, started on them) (default: fixed)",
        )
        group.add_argument(
            "--budget",
            type=float,
            default=None,
            help="with --groups learned: the multiply-adds the pointwise convs may keep "
            "together, as a fraction of their dense cost; a hinge penalty above it (default: "
            "none). The start (the model's groups) costs what `python -m autoshuffle_ext.models "
            "--groups learned` lists as the budget that matches the fixed model",
        )
        # No defaults here, so that giving one without --groups learned is seen.
        group.add_argument(
            "--budget-weight",
            type=float,
            default=None,
            help="with --groups learned: lambda of the --budget term (its hinge on the cost "
            f"fraction) (default: {d.budget_weight})",
        )
        group.add_argument(
            "--gate-init",
            type=float,
            default=None,
            help="with --groups learned: |gate parameter| at the start. A gate flips (its "
            "layer changes group count) when its parameter crosses 0, so a smaller value lets "
            f"the group counts move sooner (default: {d.gate_init})",
        )
        group.add_argument(
            "--gate-lr",
            type=float,
            default=None,
            help="peak learning rate of the group-count gates of --groups learned (default: --lr)",
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> GroupsConfig | None:
        problems = flags_need(args, "groups", "learned", _LEARNED_FLAGS)
        d = cls()
        flags = {
            "budget": "--budget",
            "budget_weight": "--budget-weight",
            "gate_init": "--gate-init",
            "lr": "--gate-lr",
        }
        try:
            config = cls.from_flags(
                flags,
                kind="learned",
                budget=args.budget,
                budget_weight=d.budget_weight if args.budget_weight is None else args.budget_weight,
                gate_init=d.gate_init if args.gate_init is None else args.gate_init,
                lr=args.gate_lr,
            )
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return config if args.groups == "learned" else None
