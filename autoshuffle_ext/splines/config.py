"""`SplineConfig`: activation modules become trainable linear splines (`LinearSpline`), each
starting as the activation it replaces; and their training flags."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..modules import ModuleSite, StructureConfig, register_config
from ..modules.structure_config import flags_need
from .linear_spline import LinearSpline

__all__ = ["ACTIVATION_KINDS", "SplineConfig"]

ACTIVATION_KINDS = ("relu", "spline")
# The fields its flags set, in the order of their dests (--spline-lambda, ...).
_FIELDS = ("penalty_weight", "lipschitz", "lr")
# The activation modules a spline replaces, each started as itself.
_REPLACED = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.PReLU)


@register_config
@dataclass
class SplineConfig(StructureConfig):
    """Options of the spline activations.

    Sites: every `nn.ReLU` (and LeakyReLU, ReLU6, Hardtanh, PReLU) module called once on the
    example input (its channel count is read there); activations written as functions
    (`F.relu`) are not modules and stay as they are.

    penalty_weight: lambda of each spline's TV(2) (BV(2) with `lipschitz`).
    size, range: knots per channel (odd) and the grid's half-width.
    lipschitz: clip every slope to [-L, L] after each step (None: free).
    knot_threshold: slope changes below it are dropped when frozen (0: keep every knot).
    lr: peak learning rate of the knot values (None: the optimizer's).
    """

    penalty_weight: float = 1e-4
    size: int = 51
    range: float = 4.0
    lipschitz: float | None = None
    knot_threshold: float = 0.0
    lr: float | None = None

    name: ClassVar[str] = "spline"

    def problems(self) -> list[str]:
        problems = []
        if not 0 <= self.penalty_weight < math.inf:
            problems.append(f"penalty_weight must be >= 0 and finite, got {self.penalty_weight}")
        if self.size < 3 or self.size % 2 == 0:
            problems.append(f"size must be odd and >= 3, got {self.size}")
        if not 0 < self.range < math.inf:
            problems.append(f"range must be > 0 and finite, got {self.range}")
        if self.lipschitz is not None and not 0 < self.lipschitz < math.inf:
            problems.append(f"lipschitz must be > 0 and finite, got {self.lipschitz}")
        if not 0 <= self.knot_threshold < math.inf:
            problems.append(f"knot_threshold must be >= 0 and finite, got {self.knot_threshold}")
        if self.lr is not None and not 0 <= self.lr < math.inf:
            problems.append(f"lr must be >= 0 and finite, got {self.lr}")
        return problems

    def label(self) -> str | None:
        return None

    def matches(self, module: nn.Module, site: ModuleSite) -> bool:
        return (
            isinstance(module, _REPLACED)
            and site.output_shape is not None
            and len(site.output_shape) >= 2
            and site.calls == 1
        )

    def build(self, module: nn.Module, site: ModuleSite) -> nn.Module:
        spline = LinearSpline.from_activation(
            module,
            site.output_shape[1],
            size=self.size,
            range=self.range,
            penalty_weight=self.penalty_weight,
            lipschitz=self.lipschitz,
            knot_threshold=self.knot_threshold,
        )
        spline.lr = self.lr
        return spline

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = cls()
        group = parser.add_argument_group("spline activations (every ReLU module)")
        group.add_argument(
            "--activation",
            default="relu",
            choices=ACTIVATION_KINDS,
            help="relu (the model's) or spline: every ReLU module a trainable linear spline per "
            "channel, started as the ReLU (default: relu)",
        )
        group.add_argument(
            "--spline-lambda",
            type=float,
            default=None,
            help=f"with --activation spline: lambda of each spline's TV(2) (default: "
            f"{d.penalty_weight})",
        )
        group.add_argument(
            "--spline-lipschitz",
            type=float,
            default=None,
            help="with --activation spline: clip every slope to [-L, L] after each step "
            "(default: free)",
        )
        group.add_argument(
            "--spline-lr",
            type=float,
            default=None,
            help="with --activation spline: peak learning rate of the knot values (default: --lr)",
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> SplineConfig | None:
        dests = ["spline_lambda", "spline_lipschitz", "spline_lr"]
        problems = flags_need(args, "activation", "spline", dests)
        if problems:
            raise ValueError("; ".join(problems))
        if args.activation != "spline":
            return None
        flags = {f: "--" + d.replace("_", "-") for f, d in zip(_FIELDS, dests, strict=True)}
        values = {f: getattr(args, d) for f, d in zip(_FIELDS, dests, strict=True)}
        if values["penalty_weight"] is None:
            del values["penalty_weight"]
        return cls.from_flags(flags, **values)
