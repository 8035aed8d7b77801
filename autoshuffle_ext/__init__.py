"""autoshuffle_ext: learned channel permutations (AutoShuffleNet) for PyTorch."""

from . import lipschitz as lipschitz
from . import models
from ._extension import extension_available
from .doubly_stochastic import (
    distance_to_permutation,
    permutation_matrix,
    project_doubly_stochastic_,
    round_to_permutation,
)
from .modules import (
    DGConv2d,
    FixedShuffle,
    Foldable,
    GroupBudget,
    GroupsConfig,
    HardShuffle,
    LearnedShuffle,
    LearnedStructure,
    ParamGroup,
    Regularizer,
    ShuffleConfig,
    SinkhornShuffle,
    SoftShuffle,
    StructureConfig,
    attach_projection,
    convert,
    convert_shuffles,
    freeze,
    group_coverage,
    learned_matrices,
    penalty,
    register_config,
    shuffle_report,
    structure_report,
    structures,
)
from .ops import (
    cat_gather,
    channel_gather,
    fixed_shuffle_perm,
    inverse_permutation,
    l1l2_penalty,
    l1l2_penalty_grad,
    shuffle_mix,
)

__all__ = [
    "DGConv2d",
    "FixedShuffle",
    "Foldable",
    "GroupBudget",
    "GroupsConfig",
    "HardShuffle",
    "LearnedShuffle",
    "LearnedStructure",
    "ParamGroup",
    "Regularizer",
    "ShuffleConfig",
    "SinkhornShuffle",
    "SoftShuffle",
    "StructureConfig",
    "attach_projection",
    "cat_gather",
    "channel_gather",
    "convert",
    "convert_shuffles",
    "distance_to_permutation",
    "extension_available",
    "fixed_shuffle_perm",
    "freeze",
    "group_coverage",
    "inverse_permutation",
    "l1l2_penalty",
    "l1l2_penalty_grad",
    "learned_matrices",
    "models",
    "penalty",
    "permutation_matrix",
    "project_doubly_stochastic_",
    "register_config",
    "round_to_permutation",
    "shuffle_mix",
    "shuffle_report",
    "structure_report",
    "structures",
]
__version__ = "0.1.0"

# Trainable linear-spline activations (issue 23).
from . import splines
from .splines import LinearSpline, SparseLinearSpline, SplineConfig, spline_activation

__all__ += ["LinearSpline", "SparseLinearSpline", "SplineConfig", "spline_activation", "splines"]
