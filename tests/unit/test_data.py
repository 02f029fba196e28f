"""Data layer: the real file readers, the search order, splits and on-device batches."""

import gzip
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from convbench.data import sources
from convbench.data.augment import random_crop, random_flip
from convbench.data.batches import Batches, Split
from convbench.data.formats import idx_bytes, read_cifar_batch, read_idx
from convbench.data.loader import load_splits
from convbench.errors import DatasetError
from helpers.fakedata import write_cifar_dataset, write_idx_dataset


def dataset_cfg(**overrides):
    base = dict(
        name="mnist",
        format="idx",
        torchvision_name="MNIST",
        system_dirs=[],
        num_classes=10,
        in_channels=1,
        native_size=28,
        image_size=28,
        mean=[0.5],
        std=[0.5],
        root=None,
        data_dir="/nonexistent",
        download=False,
        val_size=100,
        split_seed=0,
        train_limit=None,
        augment=SimpleNamespace(crop_padding=0, flip=False),
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def test_read_idx_roundtrip_plain_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a", "b.gz"):
        tensor = read_idx(tmp_path / name)
        assert tensor.dtype == torch.uint8
        assert tensor.tolist() == array.tolist()


def test_read_idx_names_truncated_and_corrupt_files(tmp_path):
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    truncated = tmp_path / "train-images-idx3-ubyte"
    truncated.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match="truncated or corrupt") as info:
        read_idx(truncated)
    assert str(truncated) in str(info.value)
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02" + data[2:])
    with pytest.raises(DatasetError, match="bad magic"):
        read_idx(bad_magic)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(gzip.compress(data)[:40])
    with pytest.raises(DatasetError, match=r"x\.gz"):
        read_idx(broken_gz)


def test_cifar_batches_read_as_uint8_nchw(cifar_root):
    images, labels = read_cifar_batch(cifar_root / "test_batch")
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() <= 9
    raw = pickle.loads((cifar_root / "test_batch").read_bytes(), encoding="bytes")
    # Row layout is channel-major: the first 1024 bytes are the red plane.
    assert images[0, 0].flatten().tolist() == list(raw[b"data"][0][:1024])


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    folder = write_cifar_dataset(tmp_path / "c")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Payload(), b"labels": []}))
    with pytest.raises(DatasetError, match="test_batch"):
        read_cifar_batch(folder / "test_batch")
    assert not (tmp_path / "pwned").exists()


def test_search_order_root_then_data_dir_then_system_dirs(tmp_path):
    data_dir = tmp_path / "data"
    write_idx_dataset(data_dir / "MNIST" / "raw", train=300)  # torchvision layout
    system = write_idx_dataset(tmp_path / "system", train=400)
    explicit = write_idx_dataset(tmp_path / "explicit", train=500, gz=False)
    both = dataset_cfg(data_dir=str(data_dir), system_dirs=[str(system)])
    assert len(sources.load_raw(both)[1]) == 300
    assert len(sources.load_raw(dataset_cfg(system_dirs=[str(system)]))[1]) == 400
    assert len(sources.load_raw(dataset_cfg(**{**vars(both), "root": str(explicit)}))[1]) == 500


def test_missing_dataset_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "_download", lambda *a: calls.append(a) or "URLError: offline")
    cfg = dataset_cfg(data_dir=str(tmp_path / "data"), download=True)
    with pytest.raises(DatasetError) as info:
        sources.load_raw(cfg)
    message = str(info.value)
    assert calls, "a download must be tried when nothing is found"
    assert str(tmp_path / "data" / "MNIST" / "raw") in message
    assert "URLError: offline" in message and "dataset.root" in message


def test_partial_dataset_names_the_missing_file(tmp_path):
    folder = write_idx_dataset(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        sources.load_raw(dataset_cfg(root=str(folder)))


def test_splits_are_disjoint_seeded_and_limited(mnist_root):
    cfg = dataset_cfg(root=str(mnist_root), val_size=100)
    first, second = load_splits(cfg), load_splits(cfg)
    assert len(first.train) == 500 and len(first.val) == 100 and len(first.test) == 200
    assert torch.equal(first.val.images, second.val.images)
    train_rows = {bytes(x.numpy()) for x in first.train.images}
    assert not any(bytes(x.numpy()) in train_rows for x in first.val.images)
    limited = load_splits(dataset_cfg(root=str(mnist_root), val_size=100, train_limit=50))
    assert len(limited.train) == 50
    assert torch.equal(limited.val.images, first.val.images)  # same validation set


def test_shape_mismatch_with_config_is_reported(mnist_root):
    with pytest.raises(DatasetError, match="in_channels"):
        load_splits(dataset_cfg(root=str(mnist_root), in_channels=3))


def _split(n=10, size=8, channels=1):
    images = torch.arange(n * channels * size * size, dtype=torch.int64) % 256
    return Split(images.to(torch.uint8).view(n, channels, size, size), torch.arange(n) % 10)


def test_batches_normalize_cover_every_sample_and_reshuffle_per_epoch():
    split = _split(n=10)
    batches = Batches(
        split,
        batch_size=4,
        device=torch.device("cpu"),
        mean=[0.5],
        std=[0.25],
        image_size=8,
        shuffle=True,
        seed=3,
    )
    assert len(batches) == 3
    epoch0 = list(batches.epoch(0))
    labels0 = torch.cat([y for _, y in epoch0])
    assert sorted(labels0.tolist()) == sorted(split.labels.tolist())
    x, y = epoch0[0]
    index = [int((split.labels == label).nonzero()[0]) for label in y.tolist()]
    expected = (split.images[index].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-5)
    labels1 = torch.cat([y for _, y in batches.epoch(1)])
    assert not torch.equal(labels0, labels1)
    assert torch.equal(labels0, torch.cat([y for _, y in batches.epoch(0)]))  # reproducible
    resumed = torch.cat([y for _, y in batches.epoch(0, start_batch=1)])
    assert torch.equal(resumed, labels0[4:])


def test_batches_resize_to_image_size_and_channels_last():
    batches = Batches(
        _split(channels=3),
        batch_size=4,
        device=torch.device("cpu"),
        mean=[0] * 3,
        std=[1] * 3,
        image_size=16,
        channels_last=True,
    )
    x, _ = next(batches.epoch(0))
    assert x.shape == (4, 3, 16, 16)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_random_crop_shifts_each_image_within_the_padding():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    assert torch.equal(random_crop(images, 0, torch.Generator().manual_seed(0)), images)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):  # every output must be some 4x4 window of the padded image
        windows = [padded[i, 0, r : r + 4, c : c + 4] for r in range(5) for c in range(5)]
        assert any(torch.equal(cropped[i, 0], w) for w in windows)


def test_random_flip_flips_about_half():
    images = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 1, 1, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    changed = (flipped != images).any(dim=3).flatten()
    assert 400 < int(changed.sum()) < 600
    assert torch.equal(flipped[changed], images[changed].flip(3))
