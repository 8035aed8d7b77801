"""The penalty path: minimise g(M) + lambda * P(M) over doubly stochastic M, lambda rising.

AutoShuffleNet's exact penalty P (`autoshuffle_ext.l1l2_penalty`) is concave on the
non-negative matrices and vanishes exactly on permutations. Starting from a point of the
relaxation (lambda = 0 for `warmup` iterations), lambda grows geometrically, from `lambda0`
times the range of grad g at the start, so the iterate first follows the relaxation and is then
pulled to a nearby vertex; the path stops once every row and column holds an entry
>= 1 - `vertex_tol`. With `penalty=False` the same loop is the plain relaxation.

The path may stall off every vertex (e.g. a row split between two columns, rows that the
objective cannot tell apart, or entries that underflowed to 0 in the multiplicative steps and
can never grow back). lambda then keeps growing; once a step could overflow M's dtype the path
stops at its last finite iterate and says so (`PathResult.degenerate`), rather than producing NaN.

The objective is anything with `grad(M)` (and `value(M)` for the recorded history, and
`curvature(D)` for Frank-Wolfe steps, i.e. a quadratic): the relaxations of `relaxations.py`,
or the two-layer network's population loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import Tensor

from ..kernels import as_stack
from ..ops.penalty import l1l2_penalty, l1l2_penalty_grad
from .steps import frank_wolfe_step, gradient_step, mirror_step, projected_step

__all__ = ["PathOptions", "PathResult", "StepKind", "distance_to_vertex", "penalty_path"]

StepKind = Literal["mirror", "frank-wolfe", "projected", "gradient"]
STEP_KINDS = ("mirror", "frank-wolfe", "projected", "gradient")


class Objective(Protocol):
    """What the path minimises besides the penalty, for M [..., n, n]: `grad` at every step,
    `value` for the recorded history, `curvature` for Frank-Wolfe steps only (an objective used
    with the other steps, such as the two-layer loss, may leave it out)."""

    def grad(self, M: Tensor) -> Tensor:
        """grad g(M), M's shape."""
        ...

    def value(self, M: Tensor) -> Tensor:
        """g(M), of M's batch shape [...]."""
        ...

    def curvature(self, D: Tensor) -> Tensor:
        """c(D), the coefficient of t^2 in g(M + t D) (a quadratic g), of D's batch shape."""
        ...


@dataclass(frozen=True)
class PathOptions:
    """Knobs of the path. Defaults are the ones measured in bench/RESULTS.md."""

    step: StepKind = "mirror"
    penalty: bool = True
    max_iters: int = 300
    warmup: int = 10
    lambda0: float = 0.02
    growth: float = 1.3
    eta: float = 8.0
    scaling_iters: int = 5
    vertex_tol: float = 1e-2
    # Without the penalty the path ends once no entry moved more than this in a step.
    stall_tol: float = 1e-12

    def __post_init__(self) -> None:
        if self.step not in STEP_KINDS:
            raise ValueError(f"step must be one of {STEP_KINDS}, got {self.step!r}")
        for name in ("max_iters", "warmup", "scaling_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lambda0", "eta", "vertex_tol", "stall_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.growth >= 1:
            raise ValueError(f"growth must be >= 1, got {self.growth}")


@dataclass
class PathResult:
    """The final M ([..., n, n]), iterations run, whether `solved` ended the path, the
    per-iteration history when recorded, and whether the path degenerated: its next step could
    not be taken in M's dtype (lambda or the objective's gradient beyond its range), so M is
    the last finite iterate, not a vertex."""

    M: Tensor
    iterations: int
    solved: bool = False
    history: dict[str, list[Tensor]] = field(default_factory=dict)
    degenerate: bool = False


def distance_to_vertex(M: Tensor) -> Tensor:
    """max over rows and columns of 1 - (largest entry): 0 exactly at permutations ([...])."""
    rows = 1 - M.amax(dim=-1).amin(dim=-1)
    cols = 1 - M.amax(dim=-2).amin(dim=-1)
    return torch.maximum(rows, cols)


def _lambda_factor(options: PathOptions, ramp: int) -> float:
    """lambda0 * growth^ramp, inf where that overflows a Python float."""
    try:
        return options.lambda0 * options.growth**ramp
    except OverflowError:
        return math.inf


def _step_stays_finite(H: Tensor, eta: float) -> bool:
    """Whether every step kind from H stays within H's dtype: |H| times eta and n^2 (the sums of a
    Frank-Wolfe slope), with a margin of 4, is finite. One host synchronisation."""
    n = H.shape[-1]
    bound = float(H.abs().amax()) * max(eta, 1.0) * n * n * 4
    return math.isfinite(bound) and bound < torch.finfo(H.dtype).max


@torch.no_grad()
def penalty_path(
    objective: Objective,
    M0: Tensor,
    options: PathOptions,
    *,
    record: bool = False,
    solved: Callable[[Tensor], bool] | None = None,
) -> PathResult:
    """Runs the path from M0 ([..., n, n], doubly stochastic, float) and returns where it ends.

    With `record`, `history` holds per iteration the objective g(M), the penalty P(M) and
    lambda (each a tensor of M's batch shape), measured before the step. `solved(M)`, checked
    after every step, ends the path early (e.g. on a certificate of optimality). A step that
    could overflow M's dtype ends it too, at the last finite M (`degenerate`); callers whose
    objective has a large scale should divide it out first (the solvers scale A and B to 1).
    """
    opts = options
    M = M0.clone()
    G = objective.grad(M)
    # lambda's unit: half the range of grad g at the start, the range of grad P being [0, 2].
    unit = (G.amax(dim=(-2, -1)) - G.amin(dim=(-2, -1))) / 2
    history: dict[str, list[Tensor]] = {"objective": [], "penalty": [], "lambda": []}
    iters, done, degenerate = 0, False, False
    for k in range(opts.max_iters):
        ramp = k - opts.warmup
        lam = unit * _lambda_factor(opts, ramp) if opts.penalty and ramp >= 0 else None
        if k > 0:
            G = objective.grad(M)
        if lam is not None:
            H = G + lam[..., None, None] * l1l2_penalty_grad(as_stack(M)).view_as(M)
        else:
            H = G
        if not _step_stays_finite(H, opts.eta):
            degenerate = True
            break
        if record:
            history["objective"].append(objective.value(M))
            history["penalty"].append(l1l2_penalty(as_stack(M)).view(M.shape[:-2]))
            history["lambda"].append(torch.zeros_like(unit) if lam is None else lam)
        if opts.step == "mirror":
            M_next = mirror_step(M, H, opts.eta, opts.scaling_iters)
        elif opts.step == "projected":
            M_next = projected_step(M, H, opts.eta, opts.scaling_iters)
        elif opts.step == "gradient":
            M_next = gradient_step(M, H, opts.eta, opts.scaling_iters)
        else:
            M_next = frank_wolfe_step(M, H, objective.curvature)[0]
        iters = k + 1
        if solved is not None and solved(M_next):
            M, done = M_next, True
            break
        if lam is not None:
            M = M_next
            if bool((distance_to_vertex(M) <= opts.vertex_tol).all()):
                break
        else:
            moved = (M_next - M).abs().amax()
            M = M_next
            if not opts.penalty and bool(moved <= opts.stall_tol):
                break
    return PathResult(M, iters, done, history if record else {}, degenerate)
