"""Models by name, in torchvision's style: `shufflenet_v2_x1_0`, `shufflenet_v1_g3`,
`shufflenet_v1_g8_x0_5` (width 0.5; v1 names without a width are 1.0x)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from ..lipschitz import lipconvnet_large, lipconvnet_small
from ..modules import StructureConfig
from .complexity import input_resolution
from .shufflenet_v1 import V1_STAGE2_CHANNELS, shufflenet_v1
from .shufflenet_v2 import V2_STAGE_CHANNELS, shufflenet_v2
from .structures import with_structures

__all__ = [
    "LIPSCHITZ_MODELS",
    "MODEL_NAMES",
    "build_model",
    "check_model_name",
    "model_name",
    "parse_model_name",
]

_PATTERN = re.compile(
    r"shufflenet_(?P<version>v1|v2)(?:_g(?P<groups>\d+))?(?:_x(?P<width>\d+_\d+))?"
)


def model_name(version: str, width_mult: float, groups: int | None = None) -> str:
    """The canonical name of a model (e.g. `shufflenet_v2_x0_5`, `shufflenet_v1_g3`)."""
    whole, frac = f"{width_mult:.2f}".rstrip("0").split(".")
    width = f"x{whole}_{frac or '0'}"
    if version == "v1":
        return f"shufflenet_v1_g{groups}" + ("" if width_mult == 1.0 else f"_{width}")
    return f"shufflenet_v2_{width}"


MODEL_NAMES: tuple[str, ...] = tuple(
    [model_name("v1", 1.0, g) for g in V1_STAGE2_CHANNELS]
    + [model_name("v1", 0.5, g) for g in V1_STAGE2_CHANNELS]
    + [model_name("v2", w) for w in V2_STAGE_CHANNELS]
)


# The Lipschitz networks of Li et al. (1-Lipschitz by construction; CIFAR-sized inputs).
LIPSCHITZ_MODELS = {"lipconvnet_small": lipconvnet_small, "lipconvnet_large": lipconvnet_large}


def check_model_name(name: str) -> None:
    """Raises ValueError (see `parse_model_name`) unless `name` names a model of the package."""
    if name not in LIPSCHITZ_MODELS:
        parse_model_name(name)


def parse_model_name(name: str) -> tuple[str, float, int | None]:
    """(version, width_mult, groups) of a model name; groups is None for v2.

    Raises:
        ValueError: a name that is not a ShuffleNet v1/v2 name of this package (the message
            lists examples).
    """
    match = _PATTERN.fullmatch(name)
    problem = None
    if match is None:
        problem = "not a model name"
    else:
        version, groups, width = match["version"], match["groups"], match["width"]
        if version == "v1" and groups is None:
            problem = "ShuffleNet v1 names carry the group count (_g3)"
        elif version == "v2" and (groups is not None or width is None):
            problem = "ShuffleNet v2 names carry a width (_x1_0) and no groups"
    if problem is not None:
        raise ValueError(
            f"unknown model {name!r} ({problem}); expected one of {', '.join(MODEL_NAMES)}, or "
            "shufflenet_v1_g<groups>_x<w>_<w> for another v1 width in [0.25, 2.0]"
        )
    width_mult = float(width.replace("_", ".")) if width else 1.0
    return version, width_mult, int(groups) if groups else None


def build_model(
    name: str,
    num_classes: int = 1000,
    stem: str = "imagenet",
    structures: Sequence[StructureConfig] = (),
    generator: torch.Generator | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """The model called `name` (see `parse_model_name`), built plain (fixed shuffle, fixed
    groups), with the given head and stem, then converted by `structures` (the one pass,
    `asx.convert`; see `with_structures`); `generator` draws what the structures draw at
    random. The LipConvNets (`LIPSCHITZ_MODELS`) take `image_size` (default: the stem's
    resolution), a multiple of 4; the stem does not apply to them.

    Raises:
        ValueError: unknown name, or arguments the model rejects.
    """
    side = image_size or input_resolution(stem)
    if name in LIPSCHITZ_MODELS:
        model = LIPSCHITZ_MODELS[name](num_classes, input_size=(side, side))
        return with_structures(model, list(structures), side, generator)
    version, width_mult, groups = parse_model_name(name)
    if version == "v1":
        model = shufflenet_v1(groups, width_mult, num_classes, stem)
    else:
        model = shufflenet_v2(width_mult, num_classes, stem)
    return with_structures(model, list(structures), side, generator)
