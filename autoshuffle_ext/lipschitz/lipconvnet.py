"""The LipConvNets of Li et al. (NeurIPS 2019; the "Small" and "Large" CIFAR-10 networks of the
reference code, `SmallConvNet` / `LargeConvNet` with BCOP convolutions, Björck linear layers and
MaxMin activations): 1-Lipschitz in l2 by construction, so their logits certify their own
robustness (`certify`).

Small: conv 4x4 stride 2 (16), conv 4x4 stride 2 (32), linear 100, linear K.
Large: conv 3x3 (32), conv 4x4 stride 2 (32), conv 3x3 (64), conv 4x4 stride 2 (64),
linear 512, linear 512, linear K.
Each stride 2 conv is an invertible downsampling and a 2x2 BCOP convolution; MaxMin follows
every layer but the last. The reference scales each layer's output by `scaling ** (1 / depth)`
with scaling 1 in its CIFAR-10 runs: no scaling here. Inputs are taken unnormalised (pixel
values in [0, 1]): a per-channel normalisation would change the Lipschitz constant.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ._checks import check_int
from .bcop import BCOPConv2d
from .group_sort import MaxMin
from .linear import BjorckLinear

__all__ = ["LipConvNet", "lipconvnet_large", "lipconvnet_small"]


class LipConvNet(nn.Sequential):
    """A chain of BCOP convolutions, Björck linear layers and MaxMin activations (an
    `nn.Sequential`: `lipschitz_bound` multiplies its layers' bounds, `freeze` turns it into
    plain convolutions and linear layers computing the same outputs).

    Args:
        convs: (out_channels, kernel_size, stride) per convolution.
        hidden: widths of the hidden linear layers.
        num_classes: K, the logits' width.
        in_channels: of the input images.
        input_size: (H, W) of the input images (multiples of the product of the strides).
        bjorck_iters: of every layer's orthonormalisation.
        activation: "maxmin" (the paper's, gradient-norm preserving) or "spline": a trainable
            per-channel linear spline (`asx.LinearSpline`, started as ReLU) whose slopes are
            clipped to [-1, 1] after each step, so the network stays 1-Lipschitz.

    Forward: [N, in_channels, H, W] -> logits [N, num_classes].

    Raises:
        TypeError: a size that is not an int.
        ValueError: sizes below 1, an input size not a multiple of the strides, or a kernel
            size not a multiple of its stride.
    """

    def __init__(
        self,
        convs: list[tuple[int, int, int]],
        hidden: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: tuple[int, int] = (32, 32),
        *,
        bjorck_iters: int = 20,
        activation: str = "maxmin",
    ) -> None:
        check_int("num_classes", num_classes, 2)
        if activation not in ("maxmin", "spline"):
            raise ValueError(f"activation must be 'maxmin' or 'spline', got {activation!r}")

        def act(width: int) -> nn.Module:
            if activation == "maxmin":
                return MaxMin()
            from ..splines import LinearSpline  # the splines build on the same protocol

            return LinearSpline(width, init="relu", lipschitz=1.0)

        channels = check_int("in_channels", in_channels, 1)
        if not (isinstance(input_size, (tuple, list)) and len(input_size) == 2):
            raise ValueError(f"input_size must be a pair (H, W), got {input_size!r}")
        h, w = (check_int("input_size", v, 1) for v in input_size)
        layers: dict[str, nn.Module] = {}
        for i, (out, k, s) in enumerate(convs, start=1):
            if h % s or w % s:
                raise ValueError(
                    f"input_size must be a multiple of the strides' product, got {input_size} "
                    f"(conv{i} has stride {s} on a {h}x{w} input)"
                )
            layers[f"conv{i}"] = BCOPConv2d(channels, out, k, s, bjorck_iters=bjorck_iters)
            layers[f"act{i}"] = act(out)
            channels, h, w = out, h // s, w // s
        layers["flatten"] = nn.Flatten()
        features = channels * h * w
        widths = [*hidden, num_classes]
        for j, width in enumerate(widths, start=1):
            layers[f"linear{j}"] = BjorckLinear(features, width, bjorck_iters=bjorck_iters)
            if j < len(widths):
                layers[f"act{len(convs) + j}"] = act(width)
            features = width
        super().__init__(OrderedDict(layers))
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))


def lipconvnet_small(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: tuple[int, int] = (32, 32),
    activation: str = "maxmin",
) -> LipConvNet:
    """The paper's "Small" network: BCOP 4x4/2 (16), BCOP 4x4/2 (32), Björck linear 100, K; MaxMin
    between layers. [N, in_channels, H, W] -> [N, num_classes]; H, W multiples of 4."""
    return LipConvNet(
        [(16, 4, 2), (32, 4, 2)],
        [100],
        num_classes,
        in_channels,
        input_size,
        activation=activation,
    )


def lipconvnet_large(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: tuple[int, int] = (32, 32),
    activation: str = "maxmin",
) -> LipConvNet:
    """The paper's "Large" network: BCOP 3x3 (32), 4x4/2 (32), 3x3 (64), 4x4/2 (64), Björck linear
    512, 512, K; MaxMin between layers. [N, in_channels, H, W] -> [N, num_classes]; H, W
    multiples of 4."""
    return LipConvNet(
        [(32, 3, 1), (32, 4, 2), (64, 3, 1), (64, 4, 2)],
        [512, 512],
        num_classes,
        in_channels,
        input_size,
        activation=activation,
    )
