from pathlib import Path

import pytest

from helpers.fakedata import write_cifar_dataset, write_idx_dataset


def pytest_configure(config):
    """One torch thread in the tests' own process, as in the runs they start (helpers.cli's
    ONE_THREAD): tiny nets gain nothing from more, and the threads spin-wait when the cores are
    busy. Runs in this process that set trainer.num_threads change it for what follows."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A tiny MNIST-format dataset (600 train, 200 test images, gzipped IDX)."""
    return write_idx_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10-format dataset (5 x 40 train, 100 test images, pickle batches)."""
    return write_cifar_dataset(tmp_path_factory.mktemp("cifar"))
