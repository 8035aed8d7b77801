"""`StructureConfig`: how one learned structure gets into a network, and into the training
program.

A config is a dataclass of the structure's options. It names the sites it replaces (shuffle
sites, found by what chains of shape ops compute; or modules it matches, e.g. `nn.Conv2d`), builds
its module there, and may add a model-level term over what it built (a shared budget). The
conversion pass (`asx.convert`) applies a list of configs to any network. A config class also
declares its own command-line flags; `register_config` makes them flags of `autoshuffle-train`,
which builds its models with the same pass, so a new structure reaches the training program
without an edit to it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

__all__ = [
    "STRUCTURE_CONFIGS",
    "ModuleSite",
    "StructureConfig",
    "default_structures",
    "flags_need",
    "register_config",
]


@dataclass(frozen=True)
class ModuleSite:
    """What the pass knows about a module it may replace: its name, and, when the pass ran the
    model on an example input, the module's first call's input and output shapes and how many
    times it was called (a module called at several places, e.g. one `nn.ReLU` reused, may need
    one structure per call)."""

    name: str
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    calls: int | None = None


class StructureConfig:
    """Base of the structure configs (subclasses are dataclasses of the structure's options).

    Class attributes:
        name: short name; the title of its flags and of its rows in the conversion report.
        sites: "shuffles" (every channel shuffle of the network, however written) or "modules"
            (the modules `matches` accepts).
        compare: the argparse dest of the flag whose values `autoshuffle-train --compare` runs
            side by side (one config class declares it), or None.
        runtime_fields: fields that change only the speed, not the trajectory: left out of a
            checkpoint's identity, so a resumed run may change them.
    """

    name: ClassVar[str]
    sites: ClassVar[str] = "modules"
    compare: ClassVar[str | None] = None
    # Fields that change only the speed: a resumed run may change them (see `identity`).
    runtime_fields: ClassVar[tuple[str, ...]] = ()

    # -- options -------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong with the options, one sentence each naming the option, the expected
        and the received value (the constructor raises ValueError with them)."""
        return []

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(problems))

    def label(self) -> str | None:
        """A short label of the variant this config makes (a run's name), or None."""
        return None

    def requires_sites(self) -> bool:
        """Whether converting nothing is an error where this config was asked for explicitly
        (the training program): by default, when it differs from its flags' defaults."""
        return self != type(self).default()

    def to_dict(self) -> dict:
        return {"structure": self.name, **dataclasses.asdict(self)}

    def identity(self) -> dict:
        """The fields a resumed checkpoint must match: all but `runtime_fields`."""
        return {k: v for k, v in self.to_dict().items() if k not in self.runtime_fields}

    # -- the pass --------------------------------------------------------------------------------

    def matches(self, module: nn.Module, site: ModuleSite) -> bool:
        """Module sites: whether this config replaces `module`."""
        return False

    def build(self, module: nn.Module, site: ModuleSite) -> nn.Module | None:
        """Module sites: the structure that takes `module`'s place (None: leave it)."""
        return None

    def build_shuffle(
        self, channels: int, groups: int | None, perm: torch.Tensor, generator: torch.Generator
    ) -> nn.Module:
        """Shuffle sites: the module that takes the place of the shuffle `perm` of `channels`
        channels (ShuffleNet's of `groups` groups, or None when it is another permutation);
        `generator` is the pass's one seeded generator for random draws."""
        raise NotImplementedError(f"{type(self).__name__} does not replace shuffle sites")

    def finish(self, model: nn.Module, built: list[tuple[ModuleSite, nn.Module]]) -> list[str]:
        """After the pass: may add a model-level term over what was built (a `Regularizer`,
        registered on `model`); returns notes for the report."""
        return []

    # -- the command line ------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Declares this structure's flags (in an argument group of its own)."""

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> StructureConfig | None:
        """The config the parsed flags ask for, or None when they do not enable the structure.

        Raises:
            ValueError: flags that do not fit together (the message names them).
        """
        return None

    @classmethod
    def from_flags(cls, flags: dict[str, str], **values) -> StructureConfig:
        """`cls(**values)`, its problems naming the flags (`flags`: field -> flag) instead of
        the fields: for `from_arguments`.

        Raises:
            ValueError: the options' problems, e.g. "--penalty-weight must be >= 0 ...".
        """
        try:
            return cls(**values)
        except ValueError as error:
            message = str(error).removeprefix(f"{cls.__name__}: ")
            for field, flag in flags.items():
                message = message.replace(f"{field} must", f"{flag} must")
            raise ValueError(message) from None

    @classmethod
    def default(cls) -> StructureConfig | None:
        """The config of this structure's flags at their defaults (None: off by default)."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        return cls.from_arguments(parser.parse_args([]))


def flags_need(args: argparse.Namespace, switch: str, value: str, dests: list[str]) -> list[str]:
    """One problem per flag of `dests` (argparse dests) given while `--switch` is not `value`
    (e.g. "--budget applies to --groups learned only, got --groups fixed")."""
    current = getattr(args, switch)
    if current == value:
        return []
    return [
        f"--{dest.replace('_', '-')} applies to --{switch} {value} only, got --{switch} {current}"
        for dest in dests
        if getattr(args, dest) is not None
    ]


# The config classes whose flags `autoshuffle-train` offers, in order.
STRUCTURE_CONFIGS: list[type[StructureConfig]] = []


def register_config(cls: type[StructureConfig]) -> type[StructureConfig]:
    """Class decorator: offers the config's flags in `autoshuffle-train` (the package's configs
    and a user's alike; a user's module is imported with `autoshuffle-train --plugin`)."""
    if not (isinstance(cls, type) and issubclass(cls, StructureConfig)):
        raise TypeError(f"register_config takes a StructureConfig subclass, got {cls!r}")
    if any(other.name == cls.name and other is not cls for other in STRUCTURE_CONFIGS):
        raise ValueError(f"a structure config named {cls.name!r} is already registered")
    if cls not in STRUCTURE_CONFIGS:
        STRUCTURE_CONFIGS.append(cls)
    return cls


def default_structures() -> tuple[StructureConfig, ...]:
    """Every registered structure at its flags' defaults (those on by default), in order."""
    configs = (cls.default() for cls in STRUCTURE_CONFIGS)
    return tuple(c for c in configs if c is not None)
