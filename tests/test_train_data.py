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


# ---- malformed CIFAR files: every one is a DataError that names the file ----


def _cifar_bytes(n=20, protocol=4, labels=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist() if labels is None else labels
    content = {b"batch_label": b"batch 1", b"data": data, b"labels": labels}
    return pickle.dumps(content, protocol=protocol)


def _one_batch_folder(root, payload):
    """A cifar10 folder whose data_batch_1 holds `payload`, with a valid test batch."""
    write_cifar(root, n_train=(4,), n_test=3)
    (root / "data_batch_1").write_bytes(payload)
    return root / "data_batch_1"


def test_cifar_loader_reports_a_module_name_changed_by_one_byte(tmp_path):
    payload = _cifar_bytes()
    assert payload.count(b"numpy") >= 1
    _one_batch_folder(tmp_path, payload.replace(b"numpy", b"numpz", 1))
    with pytest.raises(DataError, match=r"data_batch_1: .*numpz"):
        load_cifar(tmp_path, "cifar10")


def test_cifar_loader_never_runs_code_from_the_file(tmp_path):
    import os

    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    _one_batch_folder(tmp_path / "cifar", pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_1: .*mkdir"):
        load_cifar(tmp_path / "cifar", "cifar10")
    assert not marker.exists()


@pytest.mark.parametrize(
    "labels, match",
    [
        (["a", "b"], r"'labels' must be integers, got str"),
        ([1.7, 2.0], r"'labels' must be integers, got 1\.7"),
        ([True, False], r"'labels' must be integers, got bool"),
        ([0, 2**70], r"labels must lie in \[0, 10\)"),
        ([0, float("nan")], r"'labels' must be integers, got nan"),
        (np.array([0.5, 1.0]), r"'labels' must be integers, got 0\.5"),
        (np.array([True, False]), r"'labels' must be integers, got an array of bool"),
        (np.array(["1", "2"]), r"not a readable pickle \(a dtype must be a numeric type code"),
        ([0], r"'labels' must hold 2 labels, got 1"),
        ({0: 1, 1: 2}, r"'labels' must be a list or array of 2 integers, got dict"),
    ],
)
def test_cifar_loader_refuses_labels_that_are_not_class_indices(tmp_path, labels, match):
    _one_batch_folder(tmp_path, _cifar_bytes(n=2, labels=labels))
    with pytest.raises(DataError, match=r"data_batch_1: " + match):
        load_cifar(tmp_path, "cifar10")


def test_cifar_loader_accepts_integral_floats_lists_and_label_arrays(tmp_path):
    _one_batch_folder(tmp_path, _cifar_bytes(n=3, labels=[1.0, 2, 9.0]))
    train, _, _ = load_cifar(tmp_path, "cifar10")
    assert train.labels.tolist() == [1, 2, 9] and train.labels.dtype == torch.int64
    _one_batch_folder(tmp_path, _cifar_bytes(n=3, labels=np.array([3, 0, 7], np.uint8)))
    assert load_cifar(tmp_path, "cifar10")[0].labels.tolist() == [3, 0, 7]
    pixels = np.arange(2 * 3072).reshape(2, 3072) % 256
    _pickle(tmp_path / "data_batch_1", {b"data": pixels.tolist(), b"labels": [4, 5]})
    train, _, _ = load_cifar(tmp_path, "cifar10")
    assert torch.equal(train.images.flatten(1), torch.from_numpy(pixels.astype(np.uint8)))


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((2, 3072), np.float32), r"'data' must be uint8 \[N, 3072\], got float32"),
        ([[0] * 3072, [256] * 3072], r"'data' must hold values in \[0, 255\], got \[0, 256\]"),
        ([[0] * 3072, [0.5] * 3072], r"'data' must be uint8 \[N, 3072\], got float64"),
        ([[0] * 3072, [0] * 5], r"'data' must be uint8 \[N, 3072\]"),
        (b"\x00" * 6144, r"'data' must be a uint8 array \[N, 3072\], got bytes"),
    ],
)
def test_cifar_loader_refuses_pixels_that_are_not_uint8_rows(tmp_path, data, match):
    _one_batch_folder(tmp_path, pickle.dumps({b"data": data, b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_1: " + match):
        load_cifar(tmp_path, "cifar10")


def test_cifar_loader_checks_sizes_against_the_file_before_allocating(tmp_path):
    import struct

    path = _one_batch_folder(tmp_path, b"")
    huge = struct.pack("<Q", 2**40)
    for payload in (b"\x80\x04\x8e" + huge + b"abc.", b"\x80\x04\x95" + huge + b"N."):
        path.write_bytes(payload)
        with pytest.raises(DataError, match=r"data_batch_1: not a readable .*1099511627776"):
            load_cifar(tmp_path, "cifar10")
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"data_batch_1: .*empty"):
        load_cifar(tmp_path, "cifar10")
    # An array header asking for a terabyte (numpy writes the shape (0,) there), then pixels
    # whose size disagrees with the shape the state declares.
    valid = _cifar_bytes(n=2, protocol=2)
    terabyte = b"J\x00\x00\x00\x01J\x00\x00\x01\x00\x86"  # (2**24, 2**16)
    for payload in (
        valid.replace(b"K\x00\x85", terabyte, 1),
        valid.replace(b"K\x02M\x00\x0c\x86", b"J\x00\x00\x00\x01M\x00\x0c\x86", 1),
    ):
        assert payload != valid
        path.write_bytes(payload)
        with pytest.raises(DataError, match=r"data_batch_1: "):
            load_cifar(tmp_path, "cifar10")


def test_cifar_loader_checks_dtype_states_before_numpy_sees_them(tmp_path):
    # numpy 2.x crashes the interpreter on a dtype state with one None fewer.
    valid = _cifar_bytes(n=2, protocol=2)
    payload = valid.replace(b"NNNJ\xff\xff\xff\xff", b"NJ\xff\xff\xff\xff", 1)
    assert payload != valid
    _one_batch_folder(tmp_path, payload)
    with pytest.raises(DataError, match=r"data_batch_1: .*a dtype state must be \(3, byteorder"):
        load_cifar(tmp_path, "cifar10")


def test_cifar_loader_reads_python2_pickles(tmp_path):
    """The official CIFAR files were pickled by Python 2: str as BINSTRING, numpy.core names,
    dtype flags as ints."""
    import struct

    pixels = (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072)
    raw = pixels.tobytes()
    payload = (
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02"
        b"cnumpy\nndarray\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02M\x00\x0c\x86"
        b"cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06"
        b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + struct.pack("<I", len(raw))
        + raw
        + b"tbU\x06labelsq\x07]q\x08(K\x01K\x02eu."
    )
    _one_batch_folder(tmp_path, payload)
    train, _, _ = load_cifar(tmp_path, "cifar10")
    assert torch.equal(train.images.flatten(1), torch.from_numpy(pixels))
    assert train.labels.tolist() == [1, 2]


def _mutations(payload, rng, count):
    """Seeded random byte flips, insertions, deletions and truncations of `payload`, half of
    them in the pickle's structure (its first and last 300 bytes) rather than in the pixels."""
    for _ in range(count):
        data = bytearray(payload)
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                pos = int(rng.integers(0, len(data)))
            else:
                edge = int(rng.integers(0, min(300, len(data))))
                pos = edge if rng.random() < 0.5 else len(data) - 1 - edge
            kind = rng.integers(0, 4)
            if kind == 0:
                data[pos] = int(rng.integers(0, 256))
            elif kind == 1:
                data[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 9))).tolist())
            elif kind == 2:
                del data[pos : pos + int(rng.integers(1, 9))]
            else:
                del data[pos:]
            if not data:
                break
        yield bytes(data)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_loader_fuzz_every_corrupted_file_loads_or_is_a_data_error(tmp_path, protocol):
    path = _one_batch_folder(tmp_path, b"")
    rng = np.random.default_rng(protocol)
    outcomes = {"loaded": 0, "refused": 0}
    for payload in _mutations(_cifar_bytes(n=24, protocol=protocol), rng, 150):
        path.write_bytes(payload)
        try:
            train, test, names = load_cifar(tmp_path, "cifar10")
        except DataError as error:
            assert "data_batch_1" in str(error) and "\n" not in str(error)
            outcomes["refused"] += 1
            continue
        assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
        assert train.labels.dtype == torch.int64 and len(train.labels) == len(train.images)
        assert len(train.labels) == 0 or 0 <= train.labels.min() <= train.labels.max() < 10
        assert len(test) == 3 and names == [f"c{i}" for i in range(10)]
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 50 and outcomes["loaded"] > 0, outcomes


def test_cifar_loader_refuses_a_malformed_meta_file(tmp_path):
    write_cifar(tmp_path)
    for meta, match in [
        ({b"label_names": 7}, r"expected 10 names under 'label_names', got int"),
        ({b"label_names": [b"\xff"] * 10}, r"label names must be UTF-8 text"),
        ([1, 2], r"expected a pickled dict, got list"),
    ]:
        _pickle(tmp_path / "batches.meta", meta)
        with pytest.raises(DataError, match=r"batches\.meta: " + match):
            load_cifar(tmp_path, "cifar10")
