"""Data of the training program: CIFAR folders in the official pickle format (written here),
ImageNet-style folders, the embedded digits, augmentation in torch ops, and batch order."""

import pickle

import numpy as np
import pytest
import torch

from autoshuffle_ext.train.cli import main
from autoshuffle_ext.train.data import (
    FolderImages,
    TensorImages,
    eval_indices,
    iterate_batches,
    load_cifar,
    load_dataset,
    load_digits,
    load_image_folder,
    normalize,
    random_crop,
    random_flip,
    train_indices,
)
from autoshuffle_ext.train.errors import ConfigError, DataError


def _pickle(path, content):
    with path.open("wb") as f:
        pickle.dump(content, f)


def write_cifar(root, name="cifar10", n_train=(30, 20), n_test=12, seed=0):
    """A small folder in the official "python version" layout; returns (train, test) arrays."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    root.mkdir(parents=True, exist_ok=True)
    arrays = []
    train_names = [f"data_batch_{i + 1}" for i in range(len(n_train))]
    if name == "cifar100":
        train_names, n_train = ["train"], (sum(n_train),)
    for file, n in [
        *zip(train_names, n_train, strict=True),
        ("test_batch" if name == "cifar10" else "test", n_test),
    ]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        _pickle(root / file, {b"batch_label": file.encode(), b"data": data, label_key: labels})
        arrays.append((data, labels))
    if name == "cifar10":
        _pickle(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        _pickle(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return arrays


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_reads_the_official_layout(tmp_path, name):
    arrays = write_cifar(tmp_path, name)
    train, test, names = load_cifar(tmp_path, name)
    assert len(names) == (10 if name == "cifar10" else 100)
    assert names[3] == ("c3" if name == "cifar10" else "f3")
    train_data = np.concatenate([a for a, _ in arrays[:-1]])
    train_labels = [y for _, labels in arrays[:-1] for y in labels]
    assert train.images.shape == (len(train_data), 3, 32, 32) and train.images.dtype == torch.uint8
    # CHW row-major: the first 1024 bytes are the red plane.
    assert torch.equal(train.images[5, 0].flatten(), torch.from_numpy(train_data[5, :1024]))
    assert torch.equal(train.images[5, 2, 31], torch.from_numpy(train_data[5, -32:]))
    assert train.labels.tolist() == train_labels
    assert test.labels.tolist() == arrays[-1][1]


def test_cifar_loader_names_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_cifar(tmp_path / "missing", "cifar10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="python version"):
        load_cifar(tmp_path / "empty", "cifar10")
    write_cifar(tmp_path / "bad")
    (tmp_path / "bad" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_2"):
        load_cifar(tmp_path / "bad", "cifar10")
    _pickle(
        tmp_path / "bad" / "data_batch_2",
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
    )
    with pytest.raises(DataError, match=r"data_batch_2: 'data' must be uint8 \[N, 3072\]"):
        load_cifar(tmp_path / "bad", "cifar10")
    _pickle(
        tmp_path / "bad" / "data_batch_2",
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
    )
    with pytest.raises(DataError, match="labels must lie in"):
        load_cifar(tmp_path / "bad", "cifar10")
    _pickle(tmp_path / "bad" / "data_batch_2", {b"pixels": 0})
    with pytest.raises(DataError, match="expected keys"):
        load_cifar(tmp_path / "bad", "cifar10")


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    train, val, classes = load_image_folder(tmp_path, image_size=16)
    assert classes == ["cat", "dog"] and (len(train), len(val)) == (6, 4)
    image, label = train[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 1
    images, labels = next(iterate_batches(train, [0, 3, 5], 3, drop_last=False))
    assert images.shape == (3, 3, 16, 16) and labels.tolist() == [0, 1, 1]

    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"no image")
    broken, _, _ = load_image_folder(tmp_path, image_size=16)
    index = [path for path, _ in broken.samples].index(str(tmp_path / "train/cat/broken.jpg"))
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        broken[index]
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="classes missing from train/: bird"):
        load_image_folder(tmp_path, 16)
    with pytest.raises(DataError, match="train/ and val/"):
        load_image_folder(tmp_path / "train", 16)


def test_digits_are_embedded_and_split_the_same_way_every_time():
    train, val, names = load_digits(image_size=16)
    assert names == [str(d) for d in range(10)]
    assert (len(train), len(val)) == (1438, 359)
    assert train.images.shape[1:] == (3, 16, 16) and train.images.dtype == torch.uint8
    again, _, _ = load_digits(image_size=16)
    assert torch.equal(train.labels, again.labels)
    splits = load_dataset("digits", None)
    assert (splits.stem, splits.image_size, splits.flip, splits.num_classes) == (
        "cifar",
        16,
        False,
        10,
    )
    with pytest.raises(ConfigError, match="needs --data-dir"):
        load_dataset("cifar10", None)
    with pytest.raises(ConfigError, match="--dataset must be one of"):
        load_dataset("mnist", None)


def test_random_crop_shifts_each_image_within_the_padding():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (6, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding shows
    crops = random_crop(images, 2, g)
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for crop, source in zip(crops, padded, strict=True):
        windows = [source[:, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(crop, w) for w in windows)
    assert torch.equal(random_crop(images, 0, g), images)


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 5, 5), dtype=torch.uint8)
    flipped = random_flip(images, g)
    same = [torch.equal(a, b) for a, b in zip(flipped, images, strict=True)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, images, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < 32


def test_normalize():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8).expand(1, 3, 1, 2)
    out = normalize(images, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.25, 1.0]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([1.0, 2.0, 0.5]))
    assert out.dtype == torch.float32


def test_batch_order_depends_on_seed_and_epoch_and_ranks_share_the_data():
    data = TensorImages(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.arange(10))
    assert train_indices(data, 0, 0, 0, 1) == train_indices(data, 0, 0, 0, 1)
    assert train_indices(data, 0, 0, 0, 1) != train_indices(data, 1, 0, 0, 1)
    assert sorted(train_indices(data, 3, 0, 0, 1)) == list(range(10))
    halves = train_indices(data, 0, 0, 0, 2) + train_indices(data, 0, 0, 1, 2)
    assert sorted(halves) == list(range(10))
    assert sorted(
        eval_indices(data, 0, 3) + eval_indices(data, 1, 3) + eval_indices(data, 2, 3)
    ) == list(range(10))
    batches = list(iterate_batches(data, list(range(10)), 4, drop_last=True))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert isinstance(FolderImages([], 8), torch.utils.data.Dataset)


def test_cli_trains_on_a_cifar_folder(tmp_path, capsys):
    write_cifar(tmp_path / "cifar", n_train=(40, 24), n_test=16)
    code = main(
        [
            "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
            "--model", "shufflenet_v2_x0_5", "--compare", "fixed,learned",
            "--epochs", "1", "--batch-size", "16", "--limit-batches", "2",
            "--out", str(tmp_path / "run"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| fixed |" in out and "| learned |" in out
    assert (tmp_path / "run" / "learned" / "report.md").exists()
