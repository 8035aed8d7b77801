"""Data for the training program: the embedded digits, CIFAR folders, ImageNet-style folders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .augment import channel_stats, normalize, random_crop, random_flip
from .batches import eval_indices, iterate_batches, train_indices
from .cifar import load_cifar
from .digits import load_digits
from .image_folder import load_image_folder
from .images import FolderImages, TensorImages

__all__ = [
    "DATASETS",
    "DataSplits",
    "FolderImages",
    "TensorImages",
    "channel_stats",
    "eval_indices",
    "iterate_batches",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "normalize",
    "random_crop",
    "random_flip",
    "train_indices",
]

DATASETS = ("digits", "cifar10", "cifar100", "folder")

# Per dataset: (stem, image size, horizontal flips, crop padding). Digits are not mirror
# symmetric (a flipped 2 is no 2), so they get no flips.
_DEFAULTS = {
    "digits": ("cifar", 16, False, 2),
    "cifar10": ("cifar", 32, True, 4),
    "cifar100": ("cifar", 32, True, 4),
    "folder": ("imagenet", 224, True, 16),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    """A loaded data set with the defaults it suggests to the trainer."""

    train: Dataset
    val: Dataset
    class_names: list[str]
    mean: torch.Tensor  # [3], 0-1 scale
    std: torch.Tensor
    stem: str
    image_size: int
    flip: bool
    crop_padding: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(name: str, data_dir: str | None, image_size: int | None = None) -> DataSplits:
    """Loads `name` (one of DATASETS); image_size None means the dataset's default.

    Raises:
        ConfigError: unknown dataset, a data_dir missing where one is needed, or an image size
            a dataset cannot be resized to (CIFAR images stay 32x32).
        DataError: a missing or malformed data folder.
    """
    if name not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    stem, default_size, flip, padding = _DEFAULTS[name]
    size = image_size or default_size
    if name != "digits" and data_dir is None:
        raise ConfigError(f"--dataset {name} needs --data-dir (the folder holding it)")
    if name == "digits":
        train, val, names = load_digits(size)
    elif name in ("cifar10", "cifar100"):
        if size != 32:
            raise ConfigError(f"--image-size must be 32 for {name}, got {size}")
        train, val, names = load_cifar(data_dir, name)
    else:
        train, val, names = load_image_folder(data_dir, size)
    if isinstance(train, TensorImages):
        mean, std = channel_stats(train.images)
    else:
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
    return DataSplits(train, val, names, mean, std, stem, size, flip, padding)
