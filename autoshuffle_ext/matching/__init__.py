"""Graph matching and quadratic assignment with AutoShuffleNet's exact penalty.

    from autoshuffle_ext.matching import planted_instance, solve
    inst = planted_instance(50, density=0.5, noise=0.05)
    result = solve(inst.A, inst.B, "penalty", maximize=True)

Solvers: `penalty`, `relaxation` (this package), `faq`, `2opt` (scipy). The objective and the
permutation convention are scipy's (`problems.py`). The two-layer network example lives in
`two_layer.py`; the command line in `cli.py` (`autoshuffle-graphmatch`).
"""

from .problems import (
    PlantedInstance,
    matching_distance,
    planted_instance,
    qap_objective,
    qaplib_like_instance,
)
from .qaplib import read_qaplib, write_qaplib
from .solvers import SOLVERS, MatchResult, solve

__all__ = [
    "SOLVERS",
    "MatchResult",
    "PlantedInstance",
    "matching_distance",
    "planted_instance",
    "qap_objective",
    "qaplib_like_instance",
    "read_qaplib",
    "solve",
    "write_qaplib",
]
