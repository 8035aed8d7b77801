"""`LearnedStructure`: the protocol every learned structure of the package follows.

A learned structure is trained in a relaxed form with a penalty, is brought back onto its
constraint set after each optimizer step, and turns into an exact, cheap module for inference.
The whole-model helpers (`penalty`, `attach_projection`, `freeze`, `structure_report`,
`count_macs`) and the training program find every instance of this base in a model and read
what they need from it, never a list of classes, so a new structure (the package's or a user's)
is one subclass (and a `StructureConfig` to put it into networks).

What a structure declares:
- `raw_penalty()`: its unweighted penalty; the base weighs it by `penalty_weight` (`penalty()`)
  and reuses a value the forward pass computed (`remember_penalty`) while the parameters are
  unchanged;
- `project_()` / `project_all_()`: the step back onto the constraint set after an update;
- `to_inference()`: the exact module it becomes (`freeze`);
- `param_groups()`: optimizer hints (`ParamGroup`: name, parameters, learning rate, weight
  decay); the parameters it names are its structure parameters;
- `macs(inputs, output)`: its multiply-adds per sample in training and at inference;
- `report()`: its row in `structure_report`.

Two related roles: a `Regularizer` is a structure with no parameters of its own that adds a
model-level term over other structures (a shared cost budget) and vanishes at inference; a
`Foldable` module (a network block) merges what `freeze` left inside it (`fold_frozen_`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Foldable", "LearnedStructure", "ParamGroup", "Regularizer"]


@dataclass(frozen=True)
class ParamGroup:
    """An optimizer hint: `params` go into a parameter group of their own.

    name: the group's name; the training program's `--<name>-lr` flag (declared by the
        structure's config) sets `lr`, and the same names share one optimizer group.
    lr: the peak learning rate, or None for the optimizer's base rate.
    weight_decay: usually 0: decay would pull a relaxed structure toward a point it must not
        prefer (a mixing matrix toward 0, a gate toward flipping).
    """

    name: str
    params: tuple[nn.Parameter, ...]
    lr: float | None = None
    weight_decay: float = 0.0


def _versions(tensors: Iterable[torch.Tensor]) -> tuple[tuple, ...]:
    # An in-place update bumps the version; `.data = ...` swaps the storage instead. (A write
    # through `.data` bumps nothing: `_apply` and loading a state clear the value instead.)
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


class LearnedStructure(nn.Module, abc.ABC):
    """Base class of the learned structures (see the module docstring).

    Subclasses implement `to_inference`; they override `raw_penalty`, `project_`, `report`,
    `param_groups` and `macs` where they have something to say. `penalty_weight` (lambda) lives
    on the module; `param_group` and `lr` name the default optimizer hint.
    """

    penalty_weight: float = 0.0
    param_group: str = "structure"
    lr: float | None = None

    # -- penalty -------------------------------------------------------------------------------

    def raw_penalty(self) -> torch.Tensor:
        """This module's unweighted penalty (0-d, differentiable); zero when it has none."""
        first = next(self.parameters(), None)
        return torch.zeros((), device=None if first is None else first.device)

    def remember_penalty(self, value: torch.Tensor) -> None:
        """Called by a forward pass that computed the raw penalty on the way (a fused op):
        `penalty()` returns it while no parameter of the module has changed since, so that its
        gradient joins the forward's backward. Kept only when it carries a gradient, and not
        under `torch.compile` (the compiled graph owns its values)."""
        if value.requires_grad and not torch.compiler.is_compiling():
            self._forward_penalty = (value, _versions(self.parameters()))

    def penalty(self) -> torch.Tensor:
        """`penalty_weight * raw_penalty()` (0-d), reusing the forward's value when current."""
        cached = getattr(self, "_forward_penalty", None)
        if cached is not None and cached[1] == _versions(self.parameters()):
            raw = cached[0]
        else:
            raw = self.raw_penalty()
        return self.penalty_weight * raw

    def __getstate__(self) -> dict:
        # A remembered penalty belongs to one forward's graph: copies and pickles drop it.
        return {**super().__getstate__(), "_forward_penalty": None}

    def _apply(self, fn, recurse: bool = True):
        self._forward_penalty = None  # .to(), .half(), .cuda(): new parameter values
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._forward_penalty = None
        super()._load_from_state_dict(*args, **kwargs)

    # -- training --------------------------------------------------------------------------------

    def project_(self) -> None:
        """Brings the parameters back onto the structure's constraint set after a step."""

    @classmethod
    def project_all_(cls, modules: Iterable[LearnedStructure]) -> None:
        """`project_` of many modules of this class; a class may batch the work."""
        for module in modules:
            module.project_()

    def param_groups(self) -> list[ParamGroup]:
        """Optimizer hints for this module's structure parameters: by default all its
        parameters, in one group named `param_group`, at `lr`, without weight decay. A structure
        whose module also holds ordinary network weights (a conv's) names only its own."""
        params = tuple(self.parameters(recurse=False))
        return [ParamGroup(self.param_group, params, self.lr)] if params else []

    def structure_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of `param_groups()` (trained apart from the network's)."""
        for group in self.param_groups():
            yield from group.params

    # -- inference and accounting ------------------------------------------------------------

    @abc.abstractmethod
    def to_inference(self) -> nn.Module:
        """The exact module this structure becomes for inference (it computes what the trained
        structure computes once the relaxation has converged)."""

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int] | None:
        """(training, inference) multiply-adds of one sample of this forward call (`inputs` and
        `output` hold the batch), or None to have `count_macs` count the children (convs,
        linear layers) as usual."""
        return None

    def report(self) -> dict:
        """This module's fields in `structure_report` (the caller adds its name and kind).
        "penalty" is the unweighted penalty; structures add "distance" (how far the relaxed form
        is from its exact form) and their own fields."""
        with torch.no_grad():
            return {"penalty": float(self.raw_penalty())}


class Regularizer(LearnedStructure):
    """A model-level term over other structures (e.g. one cost budget shared by many layers):
    no parameters of its own, a penalty, and nothing at inference (`freeze` removes it). It
    holds the structures it reads as plain references, not submodules."""

    def to_inference(self) -> nn.Module:
        return nn.Identity()

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        return 0, 0


class Foldable(abc.ABC):
    """A network block that can merge what `freeze` put inside it (e.g. gathers next to
    convolutions, folded into their weights). `freeze` calls `fold_frozen_()` of every
    `Foldable` module after replacing the structures, innermost first."""

    @abc.abstractmethod
    def fold_frozen_(self) -> None:
        """Merges, in place, the frozen structures of this block into its other layers; the
        block computes exactly what it did."""
