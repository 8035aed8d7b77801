"""Python face of the compiled ops (`torch.ops.autoshuffle_ext.*`) and the Triton kernels."""

from .cat_gather import cat_gather
from .channel_gather import (
    channel_gather,
    check_permutation,
    fixed_shuffle_perm,
    inverse_permutation,
)
from .mixing import shuffle_mix
from .penalty import l1l2_penalty, l1l2_penalty_grad

__all__ = [
    "cat_gather",
    "channel_gather",
    "check_permutation",
    "fixed_shuffle_perm",
    "inverse_permutation",
    "l1l2_penalty",
    "l1l2_penalty_grad",
    "shuffle_mix",
]
