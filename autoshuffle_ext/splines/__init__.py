"""Trainable linear-spline activations (Aziznejad et al., IEEE TSP 2020), one per channel.

- `LinearSpline` (`linear_spline.py`): the learned structure (knot values, TV(2)/BV(2)
  penalty, slope clipping, sparsified inference form);
- `SparseLinearSpline` (`sparse.py`): its inference form, the kept knots only;
- `SplineConfig` (`config.py`): activation modules become splines in the conversion pass, and
  the training program's `--activation spline` flags;
- `grid.py`: the knot grid and the initial activations; `calculus.py`: slopes, slope changes,
  TV(2), slope clipping, sparsification; `reference.py`: the plain PyTorch reference of the
  fused op `autoshuffle_ext.ops.spline_activation`.
"""

from ..ops.spline_activation import spline_activation
from .calculus import clip_slopes, segment_slopes, slope_changes, sparsify, tv2
from .config import ACTIVATION_KINDS, SplineConfig
from .grid import initial_knot_values, knot_positions, spline_spacing
from .linear_spline import ACTIVATIONS, LinearSpline
from .reference import linear_spline_reference
from .sparse import SparseLinearSpline

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_KINDS",
    "LinearSpline",
    "SparseLinearSpline",
    "SplineConfig",
    "clip_slopes",
    "initial_knot_values",
    "knot_positions",
    "linear_spline_reference",
    "segment_slopes",
    "slope_changes",
    "sparsify",
    "spline_activation",
    "spline_spacing",
    "tv2",
]
