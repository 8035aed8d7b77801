"""ShuffleNet v1 (Zhang et al., 2018) with a choice of channel shuffle.

Layout of the paper's Table 1: a 24-channel stem, three stages of 4, 8 and 4 units, bottleneck
width 1/4 of the unit output, the first pointwise conv of stage 2 not grouped. Each unit is
1x1 group conv -> BN -> ReLU -> shuffle -> 3x3 depthwise (stride) -> BN -> 1x1 group conv -> BN,
added to the input (stride 1) or concatenated with its 3x3 average pool (stride 2), then ReLU.
The model is built plain (fixed shuffle, fixed groups); `shufflenet_v1(shuffle=..., pointwise=...)`
converts it with the one pass (`asx.convert`): the shuffle after the first group conv becomes
learnable, and with `pointwise="learned"` the group count of every pointwise conv too
(`DGConv2d`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modules import Foldable, make_shuffle
from .complexity import input_resolution
from .fold_v1 import fold_unit_permutations_
from .stem import check_model_args, make_stem
from .structures import activation_config, groups_config, shuffle_config, with_structures

__all__ = [
    "POINTWISE_KINDS",
    "V1_STAGE2_CHANNELS",
    "ShuffleNetV1",
    "ShuffleNetV1Unit",
    "shufflenet_v1",
]

# groups -> stage 2 output channels at width 1.0 (stages 3 and 4 double it each time).
V1_STAGE2_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
V1_STAGE_REPEATS = (4, 8, 4)
V1_STEM_CHANNELS = 24
V1_WIDTH_RANGE = (0.25, 2.0)
# "fixed": nn.Conv2d with the paper's groups; "learned": DGConv2d started on those groups.
POINTWISE_KINDS = ("fixed", "learned")


def _pointwise(in_channels: int, out_channels: int, groups: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)


class ShuffleNetV1Unit(nn.Module, Foldable):
    """One ShuffleNet v1 unit (see the module docstring).

    Args:
        in_channels, out_channels: unit input and output; a stride-2 unit's own branch makes
            `out_channels - in_channels` channels and the pooled input fills the rest.
        bottleneck: channels of the depthwise conv, divisible by `groups`.
        groups: of both pointwise convs (the first one ungrouped if `first_grouped` is False).
    After the first pointwise conv, ShuffleNet's fixed shuffle; with one group there is nothing
    to mix across groups and the unit has none (identity), as in the paper.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck: int,
        groups: int,
        stride: int,
        first_grouped: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 unit needs in_channels == out_channels, got {in_channels} and "
                f"{out_channels}"
            )
        self.stride = stride
        first_groups = groups if first_grouped else 1
        self.compress = nn.Sequential(
            _pointwise(in_channels, bottleneck, first_groups),
            nn.BatchNorm2d(bottleneck),
            nn.ReLU(inplace=True),
        )
        self.shuffle = make_shuffle("fixed", bottleneck, groups) if groups > 1 else nn.Identity()
        self.depthwise = nn.Sequential(
            nn.Conv2d(bottleneck, bottleneck, 3, stride, 1, groups=bottleneck, bias=False),
            nn.BatchNorm2d(bottleneck),
        )
        self.expand = nn.Sequential(
            _pointwise(bottleneck, branch_out, groups),
            nn.BatchNorm2d(branch_out),
        )

    def fold_frozen_(self) -> None:
        """Called by `freeze`: merges the frozen unit's gathers (`fold_unit_permutations_`)."""
        fold_unit_permutations_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.depthwise(self.shuffle(self.compress(x))))
        if self.stride == 1:
            return F.relu(out + x)
        return F.relu(torch.cat((F.avg_pool2d(x, 3, 2, 1), out), dim=1))


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 backbone + classifier, plain (fixed shuffle and groups); see
    `shufflenet_v1`."""

    def __init__(
        self,
        groups: int,
        stem_channels: int,
        stage_channels: tuple[int, int, int],
        num_classes: int = 1000,
        stem: str = "imagenet",
        stage_repeats: tuple[int, ...] = V1_STAGE_REPEATS,
    ) -> None:
        super().__init__()
        check_model_args("fixed", num_classes)
        self.stem = make_stem(stem_channels, stem)
        stages = []
        channels = stem_channels
        for index, (repeats, out) in enumerate(zip(stage_repeats, stage_channels, strict=True)):
            units = []
            for i in range(repeats):
                units.append(
                    ShuffleNetV1Unit(
                        channels,
                        out,
                        out // 4,
                        groups,
                        stride=2 if i == 0 else 1,
                        # Stage 2's first input has only the stem's few channels: kept dense.
                        first_grouped=not (index == 0 and i == 0),
                    )
                )
                channels = out
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def v1_channels(groups: int, width_mult: float) -> tuple[int, tuple[int, int, int]]:
    """(stem, (stage2, stage3, stage4)) channels for `groups` at `width_mult`.

    Stage widths are the paper's scaled by width_mult and rounded to a multiple of 4 * groups
    (so the bottleneck, a quarter, splits into the groups); the stem scales too, rounded to a
    multiple of groups (so the first stride-2 branch, stage2 - stem channels, does).
    """
    if groups not in V1_STAGE2_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(V1_STAGE2_CHANNELS)}, got {groups}")
    low, high = V1_WIDTH_RANGE
    if not low <= width_mult <= high:
        raise ValueError(f"width_mult must lie in [{low}, {high}], got {width_mult}")
    unit = 4 * groups
    stage2 = max(unit, round(V1_STAGE2_CHANNELS[groups] * width_mult / unit) * unit)
    stem = max(groups, round(V1_STEM_CHANNELS * width_mult / groups) * groups)
    return stem, (stage2, 2 * stage2, 4 * stage2)


def shufflenet_v1(
    groups: int = 3,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    stem: str = "imagenet",
    shuffle: str = "fixed",
    shuffle_options: dict | None = None,
    pointwise: str = "fixed",
    pointwise_options: dict | None = None,
    budget: float | None = None,
    budget_weight: float | None = None,
    activation: str = "relu",
    activation_options: dict | None = None,
) -> ShuffleNetV1:
    """ShuffleNet v1 with `groups` in {1, 2, 3, 4, 8} ("ShuffleNet s x" for width_mult = s).

    Args:
        groups: group count of the pointwise convs; the paper's channel setting for each.
        width_mult: in [0.25, 2.0]; scales every width (see `v1_channels`).
        num_classes: classifier outputs.
        stem: "imagenet" (224x224 inputs) or "cifar" (32x32, no early downsampling).
        shuffle: "fixed", "learned", "sinkhorn" or "none", for the shuffle of every unit.
        shuffle_options: `ShuffleConfig` fields (penalty_weight, init, blend...) and a
            `generator` for the random draws.
        pointwise: "fixed" (default: the paper's group convs) or "learned": every pointwise 1x1
            conv of the units a `DGConv2d` that learns its group count, started on the fixed
            model's (`groups`, and 1 for stage 2's first conv).
        pointwise_options: keyword arguments of `DGConv2d` with "learned", e.g.
            `{"gate_init": 0.5}` (or `{"budget": 1 / 3}`: the same budget for every layer).
        budget: with "learned", one budget for all the pointwise convs together (`GroupBudget`,
            the model's `group_budget`): the fraction in (0, 1] of their dense multiply-adds the
            model may keep, shared so that layers can trade group counts. The model starts on
            the fixed model's groups, so its `group_budget.cost_fraction()` at the start is the
            fixed model's cost: the budget that matches it.
        budget_weight: lambda of that budget term (default `DGConv2d`'s).
        activation: "relu" (the paper's) or "spline": every ReLU module (the stem's and each
            unit's first) a trainable per-channel linear spline started as the ReLU
            (`SplineConfig`; the unit's last ReLU is `F.relu` in code and stays).
        activation_options: `SplineConfig` fields with "spline" (penalty_weight, lipschitz...).

    Raises:
        ValueError: unsupported groups, width_mult, stem, shuffle, pointwise or num_classes, or
            pointwise options that DGConv2d refuses.
    """
    check_model_args(shuffle, num_classes)
    if pointwise not in POINTWISE_KINDS:
        raise ValueError(f"pointwise must be one of {POINTWISE_KINDS}, got {pointwise!r}")
    shuffles, generator = shuffle_config(shuffle, shuffle_options)
    groups_learned = groups_config(pointwise, pointwise_options, budget, budget_weight)
    splines = activation_config(activation, activation_options)
    stem_channels, stage_channels = v1_channels(groups, width_mult)
    model = ShuffleNetV1(groups, stem_channels, stage_channels, num_classes, stem)
    configs = [shuffles, groups_learned, splines]
    return with_structures(model, configs, input_resolution(stem), generator)
