"""The penalty path: minimise g(M) + lambda * P(M) over doubly stochastic M, lambda rising.

AutoShuffleNet's exact penalty P (`autoshuffle_ext.l1l2_penalty`) is concave on the
non-negative matrices and vanishes exactly on permutations. Starting from a point of the
relaxation (lambda = 0 for `warmup` iterations), lambda grows geometrically, from `lambda0`
times the range of grad g at the start, so the iterate first follows the relaxation and is then
pulled to a nearby vertex; the path stops once every row and column holds an entry
>= 1 - `vertex_tol`. With `penalty=False` the same loop is the plain relaxation.

The objective is anything with `grad(M)` (and `value(M)` for the recorded history, and
`curvature(D)` for Frank-Wolfe steps, i.e. a quadratic): the relaxations of `relaxations.py`,
or the two-layer network's population loss.
"""

from __future__ import annotations

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
    """The final M ([..., n, n]), iterations run, whether `solved` ended the path, and the
    per-iteration history when recorded."""

    M: Tensor
    iterations: int
    solved: bool = False
    history: dict[str, list[Tensor]] = field(default_factory=dict)


def distance_to_vertex(M: Tensor) -> Tensor:
    """max over rows and columns of 1 - (largest entry): 0 exactly at permutations ([...])."""
    rows = 1 - M.amax(dim=-1).amin(dim=-1)
    cols = 1 - M.amax(dim=-2).amin(dim=-1)
    return torch.maximum(rows, cols)


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
    after every step, ends the path early (e.g. on a certificate of optimality).
    """
    opts = options
    M = M0.clone()
    G = objective.grad(M)
    # lambda's unit: half the range of grad g at the start, the range of grad P being [0, 2].
    unit = (G.amax(dim=(-2, -1)) - G.amin(dim=(-2, -1))) / 2
    history: dict[str, list[Tensor]] = {"objective": [], "penalty": [], "lambda": []}
    iters, done = 0, False
    for k in range(opts.max_iters):
        ramp = k - opts.warmup
        lam = unit * (opts.lambda0 * opts.growth**ramp) if opts.penalty and ramp >= 0 else None
        if k > 0:
            G = objective.grad(M)
        if lam is not None:
            H = G + lam[..., None, None] * l1l2_penalty_grad(as_stack(M)).view_as(M)
        else:
            H = G
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
    return PathResult(M, iters, done, history if record else {})
