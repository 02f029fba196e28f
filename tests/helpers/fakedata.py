"""Tiny datasets written in the real on-disk formats (convbench.data.formats' writers), so the
real loading code runs in tests.

Images are learnable: class k draws a bright bar in a class-specific place, plus noise.
"""

from pathlib import Path

import numpy as np

from convbench.data.formats import write_cifar_batch, write_idx


def make_images(count: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = rng.integers(0, 60, size=(count, channels, size, size)).astype(np.uint8)
    band = size // 10
    for index, label in enumerate(labels):
        start = int(label) * band
        images[index, :, start : start + band, :] = 230  # a horizontal bar per class
    return images, labels


def write_idx_dataset(folder: Path, train: int = 600, test: int = 200, gz: bool = True) -> Path:
    """MNIST/Fashion-MNIST layout: four IDX files (optionally gzipped) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = make_images(count, 1, 28, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return folder


def write_cifar_dataset(folder: Path, per_batch: int = 40, test: int = 100) -> Path:
    """CIFAR-10 python layout: data_batch_1..5 and test_batch."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = make_images(test if name == "test_batch" else per_batch, 3, 32, seed)
        write_cifar_batch(folder / name, images, labels)
    return folder
