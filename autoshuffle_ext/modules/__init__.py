"""Drop-in channel shuffle modules and the learned-structure protocol they follow: learned
(AutoShuffleNet), relaxed (Sinkhorn), fixed, exact; learned group counts (DGConv); the
structure configs and the conversion pass that puts them into networks; the whole-model
helpers."""

from .cat_shuffle import cat_shuffle
from .collect import attach_projection, learned_matrices, penalty, structures
from .conversion_report import ConversionReport, ConvertedSite, ShuffleConversionError
from .convert import convert, convert_shuffles
from .coverage import group_coverage
from .dgconv import DGConv2d
from .factory import SHUFFLE_KINDS, make_shuffle
from .freeze import freeze, shuffle_report, structure_report
from .group_budget import GroupBudget
from .groups_config import GROUPS_KINDS, GroupsConfig
from .hard import FixedShuffle, HardShuffle
from .init import initial_matrix
from .learned import DEFAULT_PENALTY_WEIGHT, LearnedShuffle
from .shuffle_config import ShuffleConfig
from .sinkhorn import SinkhornShuffle, sinkhorn
from .soft import SoftShuffle
from .structure import Foldable, LearnedStructure, ParamGroup, Regularizer
from .structure_config import (
    STRUCTURE_CONFIGS,
    ModuleSite,
    StructureConfig,
    default_structures,
    register_config,
)

__all__ = [
    "DEFAULT_PENALTY_WEIGHT",
    "GROUPS_KINDS",
    "SHUFFLE_KINDS",
    "STRUCTURE_CONFIGS",
    "ConversionReport",
    "ConvertedSite",
    "DGConv2d",
    "FixedShuffle",
    "Foldable",
    "GroupBudget",
    "GroupsConfig",
    "HardShuffle",
    "LearnedShuffle",
    "LearnedStructure",
    "ModuleSite",
    "ParamGroup",
    "Regularizer",
    "ShuffleConfig",
    "ShuffleConversionError",
    "SinkhornShuffle",
    "SoftShuffle",
    "StructureConfig",
    "attach_projection",
    "cat_shuffle",
    "convert",
    "convert_shuffles",
    "default_structures",
    "freeze",
    "group_coverage",
    "initial_matrix",
    "learned_matrices",
    "make_shuffle",
    "penalty",
    "register_config",
    "shuffle_report",
    "sinkhorn",
    "structure_report",
    "structures",
]
