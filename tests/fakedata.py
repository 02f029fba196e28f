"""Tiny datasets written in the real on-disk formats, so the real loading code runs in tests.

Images are learnable: class k draws a bright bar in a class-specific place, plus noise.
"""

import gzip
import pickle
from pathlib import Path

import numpy as np


def make_images(count: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = rng.integers(0, 60, size=(count, channels, size, size)).astype(np.uint8)
    band = size // 10
    for index, label in enumerate(labels):
        start = int(label) * band
        images[index, :, start : start + band, :] = 230  # a horizontal bar per class
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian dims, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_dataset(folder: Path, train: int = 600, test: int = 200, gz: bool = True) -> Path:
    """MNIST/Fashion-MNIST layout: four IDX files (optionally gzipped) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = make_images(count, 1, 28, seed)
        for kind, array in (("images-idx3", images[:, 0]), ("labels-idx1", labels)):
            data = idx_bytes(array)
            path = folder / f"{prefix}-{kind}-ubyte{suffix}"
            path.write_bytes(gzip.compress(data) if gz else data)
    return folder


def write_cifar_dataset(folder: Path, per_batch: int = 40, test: int = 100) -> Path:
    """CIFAR-10 python layout: data_batch_1..5 and test_batch, pickled dicts with bytes keys."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        count = test if name == "test_batch" else per_batch
        images, labels = make_images(count, 3, 32, seed)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(x) for x in labels],
            b"data": images.reshape(count, 3 * 32 * 32),
            b"filenames": [f"{i}.png".encode() for i in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder
