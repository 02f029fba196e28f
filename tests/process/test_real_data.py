"""Real data: LeNet on real Fashion-MNIST (Debian's dataset-fashion-mnist, which .ci/run installs)
learns what the lecture says it learns. The test fails, naming the package, where the data is
missing."""

import json
from pathlib import Path

import pytest
import torch

from helpers.cli import run_cli

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_lenet_on_real_fashion_mnist_beats_75_percent(tmp_path):
    """10,000 real images, 1 epoch, in a process of its own as a user would run it."""
    if not FASHION_DIR.is_dir():
        pytest.fail(f"{FASHION_DIR} is missing: apt-get install dataset-fashion-mnist")
    run_dir = tmp_path / "run"
    # batch 32: one epoch of 10,000 images is 313 steps (seeds 0-2 gave 0.77-0.78 here without
    # augmentation, as pinned below; with Fashion-MNIST's default shifts one run gave 0.74).
    result = run_cli(
        "train",
        "model=lenet",
        "dataset=fashionmnist",
        "dataset.train_limit=10000",
        "trainer.batch_size=32",
        "dataset.augment.crop_padding=0",
        "dataset.data_dir=" + str(tmp_path / "empty"),
        "dataset.download=false",
        "trainer.epochs=1",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] > 0.75, metrics["test_acc"]
    assert (
        torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["config"]["dataset"][
            "name"
        ]
        == "fashionmnist"
    )
