"""GoogLeNet's auxiliary heads over two processes: DistributedDataParallel wraps the model and
does not forward its attributes, so the engine must find `aux_loss` on the model inside the
wrapper. With the term found, two processes train the same loss as one process with the same
global batch; without it, the loss would lack 0.3 x the heads' losses (and DDP would find the
heads' parameters without gradients)."""

import json
from pathlib import Path

from helpers.cli import ONE_THREAD, run_cli

GOOGLENET = [
    "model=googlenet",
    "model.width_multiplier=0.25",
    "dataset.train_limit=256",
    "trainer.batch_size=64",
    "trainer.epochs=1",
    "trainer.log_images=false",
    ONE_THREAD,
]


def first_epoch_loss(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["history"][0]["train_loss"]


def train(tmp_path: Path, name: str, root: Path, *extra: str) -> float:
    data = ["dataset=mnist", f"dataset.root={root}", "dataset.val_size=100", "trainer.device=cpu"]
    result = run_cli(
        "train", *data, *GOOGLENET, *extra, f"hydra.run.dir={tmp_path / name}", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return first_epoch_loss(tmp_path / name)


def test_two_processes_train_the_auxiliary_loss_as_one_does(mnist_root, tmp_path):
    one = train(tmp_path, "one", mnist_root, "model.aux_heads=true")
    two = train(tmp_path, "two", mnist_root, "model.aux_heads=true", "trainer.devices=2")
    without = train(tmp_path, "without", mnist_root, "model.aux_heads=false")
    assert one - without > 0.5, "the auxiliary term adds 0.3 x two heads' losses"
    assert abs(two - one) < 0.02, (one, two)
