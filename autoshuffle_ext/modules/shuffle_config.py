"""`ShuffleConfig`: every channel shuffle of a network becomes a shuffle of one kind (learned by
default), starting from the site's own permutation; and the shuffle's training flags."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..doubly_stochastic import DEFAULT_SCALING_ITERS
from .factory import SHUFFLE_KINDS, make_shuffle
from .init import DEFAULT_BLEND, INITS
from .learned import DEFAULT_PENALTY_WEIGHT, DEFAULT_SPARSE_BELOW
from .structure_config import StructureConfig, register_config

__all__ = ["ShuffleConfig"]

# ShuffleConfig field -> argparse dest of its flag.
_ARGS = {
    "kind": "shuffle",
    "penalty_weight": "penalty_weight",
    "init": "shuffle_init",
    "blend": "shuffle_blend",
    "projection_iters": "projection_iters",
    "lr": "shuffle_lr",
    "sparse_below": "sparse_below",
}


@register_config
@dataclass
class ShuffleConfig(StructureConfig):
    """Options of the shuffles put at every shuffle site.

    kind: "learned" (AutoShuffleNet), "sinkhorn" (the convex relaxation), "fixed" (the site's
        own permutation as an exact gather), "random" (a random permutation, drawn once), "none"
        (identity).
    penalty_weight: lambda of each learned shuffle's P(M).
    init: start of learned/sinkhorn matrices: "shuffle" (the site's own permutation, blended
        toward uniform by `blend`), "identity", "random", "uniform".
    blend: weight of the uniform matrix in the permutation starts.
    noise: relative noise on the start that breaks the symmetry between channels.
    projection_iters: row/column scaling rounds of the projection after each step.
    lr: peak learning rate of the shuffle matrices (None: the optimizer's).
    sparse_below: a learned M is mixed by its non-zeros only (`sparse_mix`) once each row and
        column has at most this fraction of non-zeros; 0: always dense. Speed only: both paths
        give the same values up to the order of float additions.
    temperature, sinkhorn_iters: of "sinkhorn" (`SinkhornShuffle`'s temperature and iters).
    """

    kind: str = "learned"
    penalty_weight: float = DEFAULT_PENALTY_WEIGHT
    init: str = "shuffle"
    blend: float = DEFAULT_BLEND
    noise: float = 1e-2
    projection_iters: int = DEFAULT_SCALING_ITERS
    lr: float | None = None
    sparse_below: float = DEFAULT_SPARSE_BELOW
    temperature: float = 1.0
    sinkhorn_iters: int = 10

    name: ClassVar[str] = "shuffle"
    sites: ClassVar[str] = "shuffles"
    compare: ClassVar[str] = "shuffle"
    runtime_fields: ClassVar[tuple[str, ...]] = ("sparse_below",)  # speed only

    def problems(self) -> list[str]:
        problems = []
        if self.kind not in SHUFFLE_KINDS:
            problems.append(f"kind must be one of {SHUFFLE_KINDS}, got {self.kind!r}")
        if self.init not in INITS:
            problems.append(f"init must be one of {INITS}, got {self.init!r}")
        if not 0 <= self.penalty_weight < math.inf:
            problems.append(f"penalty_weight must be >= 0 and finite, got {self.penalty_weight}")
        if not 0 <= self.noise < math.inf:
            problems.append(f"noise must be >= 0 and finite, got {self.noise}")
        if not 0 <= self.blend <= 1:
            problems.append(f"blend must lie in [0, 1], got {self.blend}")
        if self.projection_iters < 0:
            problems.append(f"projection_iters must be >= 0, got {self.projection_iters}")
        if not 0 < self.temperature < math.inf:
            problems.append(f"temperature must be > 0 and finite, got {self.temperature}")
        if self.sinkhorn_iters < 1:
            problems.append(f"sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}")
        if self.lr is not None and not 0 <= self.lr < math.inf:
            problems.append(f"lr must be >= 0 and finite, got {self.lr}")
        if not 0 <= self.sparse_below <= 1:
            problems.append(f"sparse_below must lie in [0, 1], got {self.sparse_below}")
        return problems

    def label(self) -> str:
        return self.kind

    def requires_sites(self) -> bool:
        # A model without shuffles (ShuffleNet v1 with one group, a LipConvNet) is warned about
        # by the pass; every variant of a comparison still runs there.
        return False

    def build_shuffle(
        self, channels: int, groups: int | None, perm: torch.Tensor, generator: torch.Generator
    ) -> nn.Module:
        options: dict = {}
        if self.kind in ("learned", "sinkhorn"):
            init = perm if self.init == "shuffle" else self.init
            options = {"init": init, "blend": self.blend, "noise": self.noise}
            options["generator"] = generator
        if self.kind == "sinkhorn":
            options |= {"temperature": self.temperature, "iters": self.sinkhorn_iters}
        if self.kind == "learned":
            options |= {
                "penalty_weight": self.penalty_weight,
                "projection_iters": self.projection_iters,
                "sparse_below": self.sparse_below,
            }
        elif self.kind == "random":
            options = {"generator": generator}
        shuffle = make_shuffle(self.kind, channels, groups, perm=perm, **options)
        if self.lr is not None and hasattr(shuffle, "param_groups"):
            shuffle.lr = self.lr
        return shuffle

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        d = cls()
        group = parser.add_argument_group("learned shuffle (every channel shuffle of the model)")
        group.add_argument(
            "--shuffle", default=d.kind, choices=SHUFFLE_KINDS, help="shuffle kind of every site"
        )
        group.add_argument(
            "--penalty-weight",
            type=float,
            default=d.penalty_weight,
            help="lambda of every learned shuffle: the loss adds lambda * P(M) per shuffle, "
            "times the penalty schedule's factor in [0, 1]",
        )
        group.add_argument(
            "--shuffle-init",
            default=d.init,
            choices=INITS,
            help="start of learned/sinkhorn matrices: shuffle (the site's own shuffle blended "
            "with uniform, see --shuffle-blend), identity or random (a random permutation, "
            "likewise), uniform (no prior permutation; see bench/RESULTS.md for what each "
            "start gives)",
        )
        group.add_argument(
            "--shuffle-blend",
            type=float,
            default=d.blend,
            help="weight of the uniform matrix in the shuffle/identity/random starts: "
            "(1 - b) P + b/C",
        )
        group.add_argument(
            "--projection-iters",
            type=int,
            default=d.projection_iters,
            help="row/column scaling iterations of the projection after each step",
        )
        group.add_argument(
            "--shuffle-lr",
            type=float,
            default=None,
            help="peak learning rate of the shuffle matrices (default: --lr)",
        )
        group.add_argument(
            "--sparse-below",
            type=float,
            default=d.sparse_below,
            help="mix a learned M through its non-zeros only (sparse product and input "
            "gradient, dense gradient of M) once every row and column of M has at most this "
            "fraction of non-zeros; 0: always dense (speed only, the values are the same)",
        )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> ShuffleConfig | None:
        flags = {field: "--" + dest.replace("_", "-") for field, dest in _ARGS.items()}
        return cls.from_flags(flags, **{f: getattr(args, a) for f, a in _ARGS.items()})
