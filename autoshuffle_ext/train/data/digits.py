"""The embedded default data set: scikit-learn's bundled 8x8 handwritten digits (no download).

1,797 grey images of the digits 0-9 (the UCI optdigits test set), upsampled to a small RGB image
so that a ShuffleNet with the CIFAR stem has room for its three downsampling stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .images import TensorImages

__all__ = ["DIGITS_VAL_FRACTION", "load_digits"]

DIGITS_VAL_FRACTION = 0.2
_SPLIT_SEED = 0  # the split is part of the data set, not of a run: the same for every --seed


def load_digits(image_size: int = 16) -> tuple[TensorImages, TensorImages, list[str]]:
    """(train, validation, class names); a fixed 80/20 split, images uint8 [N, 3, S, S]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N,1,8,8]
    if image_size != 8:
        pixels = F.interpolate(
            pixels, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_val = round(DIGITS_VAL_FRACTION * len(labels))
    val, train = order[:n_val], order[n_val:]
    names = [str(d) for d in range(10)]
    return (
        TensorImages(images[train].contiguous(), labels[train]),
        TensorImages(images[val].contiguous(), labels[val]),
        names,
    )
