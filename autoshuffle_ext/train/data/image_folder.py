"""ImageNet-style class folders: `root/train/<class>/*.jpg` and `root/val/<class>/*.jpg`."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .images import FolderImages

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
_VAL_NAMES = ("val", "test")


def _samples(split: Path, classes: list[str]) -> list[tuple[str, int]]:
    samples = []
    for label, name in enumerate(classes):
        folder = split / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        samples += [(str(p), label) for p in files]
    return samples


def load_image_folder(
    data_dir: str | Path, image_size: int
) -> tuple[FolderImages, FolderImages, list[str]]:
    """(train, val, class names); classes are the sorted subfolders of `train/`.

    Raises:
        DataError: missing train/ or val/ (or test/), no class folders, a val class that train
            lacks, or a split without images.
    """
    root = Path(data_dir)
    train_dir = root / "train"
    val_dir = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), None)
    if not root.is_dir() or not train_dir.is_dir() or val_dir is None:
        raise DataError(
            f"--data-dir {root}: expected class folders under train/ and val/ (or test/)"
            + ("" if root.is_dir() else "; the folder does not exist")
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_dir}: no class folders")
    unknown = sorted({p.name for p in val_dir.iterdir() if p.is_dir()} - set(classes))
    if unknown:
        raise DataError(f"{val_dir}: classes missing from train/: {', '.join(unknown)}")
    train, val = _samples(train_dir, classes), _samples(val_dir, classes)
    for split, samples in ((train_dir, train), (val_dir, val)):
        if not samples:
            raise DataError(
                f"{split}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders"
            )
    return FolderImages(train, image_size), FolderImages(val, image_size), classes
