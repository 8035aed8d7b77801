"""What the ShuffleNet models share: the input stem, ImageNet (downsample by 4) or CIFAR (none),
and the checks of the arguments every model takes."""

from __future__ import annotations

from torch import nn

from ..modules import SHUFFLE_KINDS

__all__ = ["STEMS", "check_model_args", "make_stem"]

STEMS = ("imagenet", "cifar")


def check_model_args(shuffle: str, num_classes: int) -> None:
    """Raises ValueError for an unknown shuffle kind or fewer than one class."""
    if shuffle not in SHUFFLE_KINDS:
        raise ValueError(f"shuffle must be one of {SHUFFLE_KINDS}, got {shuffle!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


def make_stem(out_channels: int, stem: str, in_channels: int = 3) -> nn.Sequential:
    """3x3 conv + BN + ReLU, then (ImageNet only) a 3x3 max pool; both stride 2 on ImageNet.

    "imagenet" expects 224x224 inputs and leaves 56x56; "cifar" keeps the 32x32 resolution, since
    downsampling a small image by 4 before the first stage throws most of it away.

    Raises:
        ValueError: unknown stem.
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    stride = 2 if stem == "imagenet" else 1
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if stem == "imagenet":
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)
