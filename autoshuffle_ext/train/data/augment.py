"""Batch augmentation and normalisation in plain torch ops (no torchvision).

Every random draw comes from an explicit generator, so a run's augmentation is a function of its
seed and epoch: a resumed run sees exactly the crops and flips an uninterrupted one would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["channel_stats", "normalize", "random_crop", "random_flip"]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pads [N, C, H, W] by `padding` on each side, then crops each image back to H x W
    at its own random offset."""
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    rows = offsets[:, :1] + torch.arange(h)  # [N, H]
    cols = offsets[:, 1:] + torch.arange(w)  # [N, W]
    batch = torch.arange(n)[:, None, None]
    # Advanced indices around a slice put their dims first: the result is [N, H, W, C].
    crops = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirrors each image of [N, C, H, W] left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 (x / 255 - mean) / std, per channel."""
    x = images.to(torch.float32).div_(255)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (float32 [C], on the 0-1 scale) of uint8 [N, C, H, W]."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()
