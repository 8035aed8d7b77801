"""Drop-in channel shuffle modules and the learned-structure protocol they follow: learned
(AutoShuffleNet), relaxed (Sinkhorn), fixed, exact; learned group counts (DGConv); the
whole-model helpers."""

from .cat_shuffle import cat_shuffle
from .collect import attach_projection, learned_matrices, penalty, structures
from .convert import ShuffleConversionError, convert_shuffles
from .dgconv import DGConv2d
from .factory import SHUFFLE_KINDS, make_shuffle
from .freeze import freeze, shuffle_report, structure_report
from .group_budget import GroupBudget
from .hard import FixedShuffle, HardShuffle
from .init import initial_matrix
from .learned import DEFAULT_PENALTY_WEIGHT, LearnedShuffle
from .sinkhorn import SinkhornShuffle, sinkhorn
from .soft import SoftShuffle
from .structure import LearnedStructure

__all__ = [
    "DEFAULT_PENALTY_WEIGHT",
    "SHUFFLE_KINDS",
    "DGConv2d",
    "FixedShuffle",
    "GroupBudget",
    "HardShuffle",
    "LearnedShuffle",
    "LearnedStructure",
    "ShuffleConversionError",
    "SinkhornShuffle",
    "SoftShuffle",
    "attach_projection",
    "cat_shuffle",
    "convert_shuffles",
    "freeze",
    "initial_matrix",
    "learned_matrices",
    "make_shuffle",
    "penalty",
    "shuffle_report",
    "sinkhorn",
    "structure_report",
    "structures",
]
