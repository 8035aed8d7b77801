"""CIFAR-10 / CIFAR-100 from the official "python version" folders.

CIFAR-10: `data_batch_*`, `test_batch`, `batches.meta`; CIFAR-100: `train`, `test`, `meta`. Each is
a pickled dict with b"data" uint8 [N, 3072] (CHW row-major) and b"labels" (b"fine_labels" for
CIFAR-100). The pickles are read by `load_data_pickle`, which builds plain data and numeric numpy
arrays only (no code from the file runs), and every field is checked before use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .images import TensorImages
from .safe_pickle import load_data_pickle

__all__ = ["load_cifar"]

_LAYOUT = {
    # name: (train files glob, test file, meta file, label key, label names key, classes)
    "cifar10": ("data_batch_*", "test_batch", "batches.meta", b"labels", b"label_names", 10),
    "cifar100": ("train", "test", "meta", b"fine_labels", b"fine_label_names", 100),
}
_PIXELS = 3 * 32 * 32


def _unpickle(path: Path) -> dict:
    content = load_data_pickle(path)
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _pixels(path: Path, value: object) -> np.ndarray:
    """b"data" as uint8 [N, 3072]: a uint8 array, or a list of rows of integers in [0, 255]."""
    if isinstance(value, np.ndarray):
        data = value.view(np.ndarray)
    elif isinstance(value, list):
        try:
            data = np.array(value)
        except (ValueError, TypeError, OverflowError):
            raise DataError(
                f"{path}: 'data' must be uint8 [N, {_PIXELS}], got a list that is not a table "
                "of numbers"
            ) from None
        if data.dtype.kind in "iu" and data.ndim == 2 and data.shape[1] == _PIXELS and data.size:
            low, high = data.min(), data.max()
            if low < 0 or high > 255:
                raise DataError(f"{path}: 'data' must hold values in [0, 255], got [{low}, {high}]")
            data = data.astype(np.uint8)
    else:
        raise DataError(
            f"{path}: 'data' must be a uint8 array [N, {_PIXELS}], got {type(value).__name__}"
        )
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(
            f"{path}: 'data' must be uint8 [N, {_PIXELS}], got {data.dtype} {list(data.shape)}"
        )
    return data


def _not_an_integer(value: object) -> bool:
    if type(value) is float:
        return not value.is_integer()  # also NaN and inf
    return type(value) is not int  # bool, str, bytes, containers...


def _labels(path: Path, value: object, key: str, n: int, num_classes: int) -> np.ndarray:
    """The labels as int64 [n] in [0, num_classes): a list of integers (integral floats
    included) or a 1-D integer array."""
    if isinstance(value, np.ndarray):
        labels = value.view(np.ndarray)
        if labels.shape != (n,):
            raise DataError(f"{path}: {key!r} must hold {n} labels, got shape {list(labels.shape)}")
        if labels.dtype.kind == "f":
            bad = labels[~(np.isfinite(labels) & (labels == np.floor(labels)))]
            if bad.size:
                raise DataError(f"{path}: {key!r} must be integers, got {float(bad[0])!r}")
        elif labels.dtype.kind not in "iu":
            raise DataError(
                f"{path}: {key!r} must be integers, got an array of {labels.dtype.name}"
            )
        low, high = (labels.min(), labels.max()) if n else (0, 0)
    elif isinstance(value, (list, tuple)):
        if len(value) != n:
            raise DataError(f"{path}: {key!r} must hold {n} labels, got {len(value)}")
        bad = next((v for v in value if _not_an_integer(v)), None)
        if bad is not None:
            got = repr(bad) if type(bad) is float else f"{type(bad).__name__} {bad!r:.20}"
            raise DataError(f"{path}: {key!r} must be integers, got {got}")
        labels = [int(v) for v in value]
        low, high = (min(labels), max(labels)) if n else (0, 0)
    else:
        raise DataError(
            f"{path}: {key!r} must be a list or array of {n} integers, got {type(value).__name__}"
        )
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}), got [{int(low)}, {int(high)}]"
        )
    return np.asarray(labels, dtype=np.int64)


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path)
    if b"data" not in content or label_key not in content:
        keys = sorted(
            k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in content
        )
        raise DataError(
            f"{path}: expected keys 'data' and {label_key.decode()!r}, found {', '.join(keys)}"
        )
    data = _pixels(path, content[b"data"])
    labels = _labels(path, content[label_key], label_key.decode(), len(data), num_classes)
    return data, labels


def _class_names(path: Path, names_key: bytes, num_classes: int) -> list[str]:
    names = _unpickle(path).get(names_key)
    key = names_key.decode()
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        got = f"{len(names)}" if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{path}: expected {num_classes} names under {key!r}, got {got}")
    out = []
    for name in names:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{path}: label names must be UTF-8 text, got {name!r:.40}"
                ) from None
        if not isinstance(name, str):
            raise DataError(f"{path}: label names must be text, got {type(name).__name__}")
        out.append(name)
    return out


def _owned(array: np.ndarray) -> np.ndarray:
    """A contiguous, writable array (those unpickled from bytes may be read-only views)."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _to_images(data: np.ndarray, labels: np.ndarray) -> TensorImages:
    images = torch.from_numpy(_owned(data)).view(-1, 3, 32, 32)
    return TensorImages(images, torch.from_numpy(_owned(labels)))


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
        names = _class_names(meta_file, names_key, num_classes)
    return train, test, names
