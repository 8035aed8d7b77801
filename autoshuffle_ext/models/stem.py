"""The input stem shared by the ShuffleNet models: ImageNet (downsample by 4) or CIFAR (none)."""

from __future__ import annotations

from torch import nn

__all__ = ["STEMS", "make_stem"]

STEMS = ("imagenet", "cifar")


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
