"""The two kinds of image set the trainer reads: decoded in memory, or decoded on demand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["FolderImages", "TensorImages"]


class TensorImages(Dataset):
    """Images held in memory: uint8 [N, 3, H, W] and int64 labels [N]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape [{images.shape[0]}], got {labels.shape}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch by one indexing op (no per-sample collation)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]


class FolderImages(Dataset):
    """Image files decoded on access (PIL), resized so the shorter side is `size`, then
    center-cropped to size x size; items are uint8 [3, size, size] and the label."""

    def __init__(self, samples: list[tuple[str, int]], size: int) -> None:
        self.samples = samples
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                width, height = image.size
                scale = self.size / min(width, height)
                resized = (
                    max(self.size, round(width * scale)),
                    max(self.size, round(height * scale)),
                )
                image = image.resize(resized, Image.Resampling.BILINEAR)
                left = (resized[0] - self.size) // 2
                top = (resized[1] - self.size) // 2
                image = image.crop((left, top, left + self.size, top + self.size))
                data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"cannot read image {Path(path)}: {error}") from None
        return data.view(self.size, self.size, 3).permute(2, 0, 1).contiguous(), label
