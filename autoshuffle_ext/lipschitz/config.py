"""`OrthogonalConfig`: convolutions become orthogonal convolutions (`BCOPConv2d`) in the one
conversion pass, and the training program's `--convs orthogonal` flag.

A BCOP convolution is 1-Lipschitz by construction; it does not compute what the conv it replaces
did (it starts from random orthogonal blocks), so the pass builds a network to train, not a
converted checkpoint.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..modules import ModuleSite, StructureConfig, register_config
from ..modules.structure_config import flags_need
from .bcop import BCOPConv2d

__all__ = ["CONV_KINDS", "OrthogonalConfig"]

CONV_KINDS = ("plain", "orthogonal")


@register_config
@dataclass
class OrthogonalConfig(StructureConfig):
    """Options of the orthogonal convolutions.

    Sites: every dense `nn.Conv2d` (groups 1, dilation 1, square kernel) that keeps the size
    (stride 1, odd kernel k, padding k // 2) or cuts it by its stride (kernel == stride, no
    padding): the shapes a BCOP convolution has. Grouped and depthwise convs stay.

    lr: peak learning rate of the orthogonal blocks (None: the optimizer's).
    """

    kind: str = "orthogonal"
    lr: float | None = None

    name: ClassVar[str] = "orthogonal"

    def problems(self) -> list[str]:
        problems = []
        if self.kind not in CONV_KINDS:
            problems.append(f"kind must be one of {CONV_KINDS}, got {self.kind!r}")
        if self.lr is not None and not 0 <= self.lr < math.inf:
            problems.append(f"lr must be >= 0 and finite, got {self.lr}")
        return problems

    def matches(self, module: nn.Module, site: ModuleSite) -> bool:
        if self.kind != "orthogonal" or type(module) is not nn.Conv2d:
            return False
        (kh, kw), (sh, sw), padding = module.kernel_size, module.stride, module.padding
        if module.groups != 1 or module.dilation != (1, 1) or kh != kw or sh != sw:
            return False
        same = sh == 1 and kh % 2 == 1 and padding == (kh // 2, kh // 2)
        patches = sh > 1 and kh == sh and padding == (0, 0)
        return same or patches

    def build(self, module: nn.Module, site: ModuleSite) -> nn.Module:
        conv = BCOPConv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size[0],
            module.stride[0],
            bias=module.bias is not None,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        conv.lr = self.lr
        return conv

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("orthogonal convolutions (BCOP)")
        group.add_argument(
            "--convs",
            default="plain",
            choices=CONV_KINDS,
            help="plain, or orthogonal: every dense size-keeping conv a BCOP convolution "
            "(1-Lipschitz; trained from a random orthogonal start) (default: plain)",
        )
        group.add_argument(
            "--orthogonal-lr",
            type=float,
            default=None,
            help="with --convs orthogonal: peak learning rate of the orthogonal blocks "
            "(default: --lr)",
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> OrthogonalConfig | None:
        problems = flags_need(args, "convs", "orthogonal", ["orthogonal_lr"])
        if problems:
            raise ValueError("; ".join(problems))
        if args.convs != "orthogonal":
            return None
        return cls.from_flags({"lr": "--orthogonal-lr"}, lr=args.orthogonal_lr)
