"""Python face of the compiled ops (`torch.ops.autoshuffle_ext.*`) and the Triton kernels."""

from .cat_gather import cat_gather, cat_gather_path
from .channel_gather import (
    channel_gather,
    check_permutation,
    fixed_shuffle_perm,
    force_gather_path,
    gather_path,
    gather_path_names,
    inverse_permutation,
)
from .mixing import shuffle_mix
from .penalty import l1l2_penalty, l1l2_penalty_grad

__all__ = [
    "cat_gather",
    "cat_gather_path",
    "channel_gather",
    "check_permutation",
    "fixed_shuffle_perm",
    "force_gather_path",
    "gather_path",
    "gather_path_names",
    "inverse_permutation",
    "l1l2_penalty",
    "l1l2_penalty_grad",
    "shuffle_mix",
]
