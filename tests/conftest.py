import os
import subprocess
import sys
from pathlib import Path

import pytest

from fakedata import write_cifar_dataset, write_idx_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A tiny MNIST-format dataset (600 train, 200 test images, gzipped IDX)."""
    return write_idx_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10-format dataset (5 x 40 train, 100 test images, pickle batches)."""
    return write_cifar_dataset(tmp_path_factory.mktemp("cifar"))


def run_cli(*args: str, cwd: Path, timeout: float = 300, env_extra=None):
    """Run `convbench ARGS` as a user would, in a subprocess; returns CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "convbench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def tiny_mnist_overrides(root: Path) -> list[str]:
    """Overrides for a seconds-long run on the tiny MNIST fixture."""
    return [
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.eval_batch_size=256",
        "trainer.log_every_n_steps=2",
        "trainer.device=cpu",
    ]
