"""ShuffleNet v2 (Ma et al., 2018) with a choice of channel shuffle.

The layout is torchvision's `shufflenet_v2_x*` exactly (stage repeats 4, 8, 4; bias-free convs,
BatchNorm after each; fc with bias), so the fixed-shuffle ImageNet models have torchvision's
parameter counts. The model is built plain; `shufflenet_v2(shuffle=...)` converts it with the one
pass (`asx.convert`), which makes the shuffle after the concat of the two branches learnable.
Where the shuffle is an exact permutation (fixed, or frozen) the concat and the shuffle are one
pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import cat_shuffle, make_shuffle
from .complexity import input_resolution
from .stem import check_model_args, make_stem
from .structures import activation_config, shuffle_config, with_structures

# One node when torch.fx traces a unit (convert_shuffles then sees the concat and shuffle whole).
torch.fx.wrap("cat_shuffle")

__all__ = ["V2_STAGE_CHANNELS", "ShuffleNetV2", "ShuffleNetV2Unit", "shufflenet_v2"]

# width_mult -> [stem, stage2, stage3, stage4, conv5] output channels (the paper's Table 5).
V2_STAGE_CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
V2_STAGE_REPEATS = (4, 8, 4)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def _pointwise_bn_relu(inp: int, out: int) -> list[nn.Module]:
    return [nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]


class ShuffleNetV2Unit(nn.Module):
    """One ShuffleNet v2 unit: split (stride 1) or duplicate (stride 2), two branches, concat,
    then the channel shuffle over the `out_channels` concatenated channels (2 groups). The concat
    and the shuffle go through `cat_shuffle`: one `cat_gather` when the shuffle is an exact
    permutation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        branch = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 unit needs in_channels == out_channels, got {in_channels} and "
                f"{out_channels}"
            )
        self.stride = stride
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride),
                nn.BatchNorm2d(in_channels),
                *_pointwise_bn_relu(in_channels, branch),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            *_pointwise_bn_relu(in_channels if stride == 2 else branch, branch),
            _depthwise(branch, stride),
            nn.BatchNorm2d(branch),
            *_pointwise_bn_relu(branch, branch),
        )
        self.shuffle = make_shuffle("fixed", out_channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            return cat_shuffle(self.shuffle, x1, self.branch2(x2))
        return cat_shuffle(self.shuffle, self.branch1(x), self.branch2(x))


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2 backbone + classifier, plain (fixed shuffle); see `shufflenet_v2`."""

    def __init__(
        self,
        stage_channels: tuple[int, int, int, int, int],
        num_classes: int = 1000,
        stem: str = "imagenet",
        stage_repeats: tuple[int, ...] = V2_STAGE_REPEATS,
    ) -> None:
        super().__init__()
        check_model_args("fixed", num_classes)
        stem_channels, *stage_outs, last = stage_channels
        self.stem = make_stem(stem_channels, stem)
        stages = []
        channels = stem_channels
        for repeats, out in zip(stage_repeats, stage_outs, strict=True):
            units = [ShuffleNetV2Unit(channels, out, 2)]
            units += [ShuffleNetV2Unit(out, out, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.conv5 = nn.Sequential(*_pointwise_bn_relu(channels, last))
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stages(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def shufflenet_v2(
    width_mult: float = 1.0,
    num_classes: int = 1000,
    stem: str = "imagenet",
    shuffle: str = "fixed",
    shuffle_options: dict | None = None,
    activation: str = "relu",
    activation_options: dict | None = None,
) -> ShuffleNetV2:
    """ShuffleNet v2 at `width_mult` in {0.5, 1.0, 1.5, 2.0}.

    Args:
        width_mult: selects the paper's channel configuration.
        num_classes: classifier outputs.
        stem: "imagenet" (224x224 inputs) or "cifar" (32x32, no early downsampling).
        shuffle: "fixed" (ShuffleNet's), "learned" (AutoShuffleNet), "sinkhorn" (the convex
            relaxation) or "none", for the shuffle after every unit's concat.
        shuffle_options: `ShuffleConfig` fields (penalty_weight, init, blend...) and a
            `generator` for the random draws.
        activation: "relu" or "spline": every ReLU module a trainable per-channel linear
            spline started as the ReLU (`SplineConfig`).
        activation_options: `SplineConfig` fields with "spline".

    Raises:
        ValueError: unsupported width_mult, stem, shuffle or num_classes.
    """
    check_model_args(shuffle, num_classes)
    channels = V2_STAGE_CHANNELS.get(float(width_mult))
    if channels is None:
        raise ValueError(
            f"width_mult must be one of {sorted(V2_STAGE_CHANNELS)} for ShuffleNet v2, "
            f"got {width_mult}"
        )
    shuffles, generator = shuffle_config(shuffle, shuffle_options)
    splines = activation_config(activation, activation_options)
    model = ShuffleNetV2(channels, num_classes, stem)
    return with_structures(model, [shuffles, splines], input_resolution(stem), generator)
