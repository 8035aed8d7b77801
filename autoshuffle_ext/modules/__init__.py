"""Drop-in channel shuffle modules: learned (AutoShuffleNet), relaxed (Sinkhorn), fixed, exact."""

from .collect import attach_projection, learned_matrices, learned_shuffles, penalty
from .factory import SHUFFLE_KINDS, make_shuffle
from .freeze import freeze, shuffle_report
from .hard import FixedShuffle, HardShuffle
from .init import initial_matrix
from .learned import LearnedShuffle
from .sinkhorn import SinkhornShuffle, sinkhorn

__all__ = [
    "SHUFFLE_KINDS",
    "FixedShuffle",
    "HardShuffle",
    "LearnedShuffle",
    "SinkhornShuffle",
    "attach_projection",
    "freeze",
    "initial_matrix",
    "learned_matrices",
    "learned_shuffles",
    "make_shuffle",
    "penalty",
    "shuffle_report",
    "sinkhorn",
]
