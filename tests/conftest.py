from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.fakedata import write_cifar_dataset, write_idx_dataset


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A tiny MNIST-format dataset (600 train, 200 test images, gzipped IDX)."""
    return write_idx_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10-format dataset (5 x 40 train, 100 test images, pickle batches)."""
    return write_cifar_dataset(tmp_path_factory.mktemp("cifar"))


@pytest.fixture
def cli():
    return run_cli
