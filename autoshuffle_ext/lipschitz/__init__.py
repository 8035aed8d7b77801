"""Lipschitz networks (Li et al., "Preventing Gradient Attenuation in Lipschitz Constrained
Convolutional Networks", NeurIPS 2019): orthogonal convolutions (BCOP), Björck linear layers,
gradient-norm-preserving activations, the paper's LipConvNets, an orthogonal learned shuffle,
and certified robustness from the logits.

The learned layers (`BCOPConv2d`, `BjorckLinear`, `OrthogonalShuffle`) follow the package's
`LearnedStructure` protocol: `asx.freeze` turns them into plain modules computing the same
outputs, `asx.structure_report` lists them.
"""

from .bcop import BCOPConv2d
from .bcop_kernel import bcop_kernel
from .bjorck import bjorck_orthonormalize, orthogonality_error, spectral_norm_estimate
from .bound import conv2d_lipschitz_bound, lipschitz_bound
from .certify import certified_accuracy, certified_radius, certify, margin_for_radius
from .circular import circular_conv2d, circular_conv_singular_values
from .config import CONV_KINDS, OrthogonalConfig
from .downsampling import InvertibleDownsampling
from .group_sort import GroupSort, MaxMin
from .hinge import multiclass_hinge_loss
from .linear import BjorckLinear
from .lipconvnet import LipConvNet, lipconvnet_large, lipconvnet_small
from .orthogonal_shuffle import OrthogonalShuffle
from .signed_shuffle import SignedShuffle, fold_signed_shuffle

__all__ = [
    "CONV_KINDS",
    "BCOPConv2d",
    "BjorckLinear",
    "GroupSort",
    "InvertibleDownsampling",
    "LipConvNet",
    "MaxMin",
    "OrthogonalConfig",
    "OrthogonalShuffle",
    "SignedShuffle",
    "bcop_kernel",
    "bjorck_orthonormalize",
    "certified_accuracy",
    "certified_radius",
    "certify",
    "circular_conv2d",
    "circular_conv_singular_values",
    "conv2d_lipschitz_bound",
    "fold_signed_shuffle",
    "lipconvnet_large",
    "lipconvnet_small",
    "lipschitz_bound",
    "margin_for_radius",
    "multiclass_hinge_loss",
    "orthogonality_error",
    "spectral_norm_estimate",
]
