"""Validation over two processes covers the whole validation split: each rank tests its shard
and the sums are added over the ranks. Checked against an evaluation made here, in one
process, of the same weights on the whole split, with none of the run's code for adding up."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from convbench.config.compose import compose
from convbench.data.loader import load_splits
from convbench.models.lenet import LeNet
from helpers.cli import cli_env, tiny_mnist_overrides


def test_validation_over_two_ranks_equals_one_process_on_the_same_weights(mnist_root, tmp_path):
    run = tmp_path / "run"
    overrides = [
        *tiny_mnist_overrides(mnist_root),
        "trainer.precision=fp32",
        "trainer.channels_last=false",
        "trainer.epochs=1",
        f"hydra.run.dir={run}",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "convbench",
        "train",
        *overrides,
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    reported = json.loads((run / "metrics.json").read_text())["history"][0]

    cfg = compose(tiny_mnist_overrides(mnist_root))
    val = load_splits(cfg.dataset).val
    model = LeNet(num_classes=10, in_channels=1, image_size=28)
    model.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"])
    model.eval()
    images = (val.images.float() / 255 - cfg.dataset.mean[0]) / cfg.dataset.std[0]
    with torch.no_grad():
        logits = model(images)
    assert len(val) == 100  # the whole split, not a rank's 50
    accuracy = int((logits.argmax(1) == val.labels).sum()) / len(val)
    loss = nn.functional.cross_entropy(logits, val.labels).item()
    assert reported["val_acc"] == pytest.approx(accuracy, abs=1e-9)
    assert reported["val_loss"] == pytest.approx(loss, rel=1e-4)
