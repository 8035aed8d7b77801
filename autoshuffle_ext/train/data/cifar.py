"""CIFAR-10 / CIFAR-100 from the official "python version" folders.

CIFAR-10: `data_batch_*`, `test_batch`, `batches.meta`; CIFAR-100: `train`, `test`, `meta`. Each is
a pickled dict with b"data" uint8 [N, 3072] (CHW row-major) and b"labels" (b"fine_labels" for
CIFAR-100). Pickle runs code from the file, so point `--data-dir` only at folders you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .images import TensorImages

__all__ = ["load_cifar"]

_LAYOUT = {
    # name: (train files glob, test file, meta file, label key, label names key, classes)
    "cifar10": ("data_batch_*", "test_batch", "batches.meta", b"labels", b"label_names", 10),
    "cifar100": ("train", "test", "meta", b"fine_labels", b"fine_label_names", 100),
}


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            content = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(f"{path}: not a readable CIFAR pickle ({error})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path)
    if b"data" not in content or label_key not in content:
        keys = sorted(
            k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in content
        )
        raise DataError(
            f"{path}: expected keys 'data' and {label_key.decode()!r}, found {', '.join(keys)}"
        )
    data = np.asarray(content[b"data"])
    labels = np.asarray(content[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{path}: {label_key.decode()!r} must hold {data.shape[0]} labels, got "
            f"shape {list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return data, labels.astype(np.int64)


def _to_images(data: np.ndarray, labels: np.ndarray) -> TensorImages:
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return TensorImages(images, torch.from_numpy(labels))


def load_cifar(data_dir: str | Path, name: str) -> tuple[TensorImages, TensorImages, list[str]]:
    """(train, test, class names) of the CIFAR folder `data_dir`; `name` is cifar10 or cifar100.

    Raises:
        DataError: the folder or one of its files is missing or malformed (the message names it).
    """
    if name not in _LAYOUT:
        raise ValueError(f"name must be one of {sorted(_LAYOUT)}, got {name!r}")
    train_glob, test_name, meta_name, label_key, names_key, num_classes = _LAYOUT[name]
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root}: no such folder (expected the {name} python version)")
    train_files = sorted(root.glob(train_glob))
    test_file = root / test_name
    if not train_files or not test_file.is_file():
        raise DataError(
            f"--data-dir {root}: expected the {name} 'python version' layout ({train_glob}, "
            f"{test_name}, {meta_name}); found {sorted(p.name for p in root.iterdir())}"
        )
    parts = [_read_batch(path, label_key, num_classes) for path in train_files]
    train = _to_images(np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts]))
    test = _to_images(*_read_batch(test_file, label_key, num_classes))
    names = [str(i) for i in range(num_classes)]
    meta_file = root / meta_name
    if meta_file.is_file():
        meta_names = _unpickle(meta_file).get(names_key)
        if meta_names is None or len(meta_names) != num_classes:
            raise DataError(
                f"{meta_file}: expected {num_classes} names under {names_key.decode()!r}"
            )
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta_names]
    return train, test, names
