"""A run stopped mid-epoch and resumed ends where the same run uninterrupted ends, to the bit,
with a model whose steps draw random numbers (dropout): the random state is saved with last.pt
and restored by `resume`. The stop is a real SIGTERM, sent by the model to its own process at a
chosen step (helpers.slowmodels.StopsItself); both runs happen in this process."""

import json

import torch

from helpers.cli import TRUSTED
from helpers.inprocess import convbench


def train(tmp_path, name: str, root, *extra: str):
    return convbench(
        "train",
        *TRUSTED,
        "model=stopsitself",
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        "trainer.epochs=2",
        "trainer.batch_size=50",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.log_images=false",
        "trainer.checkpoint_every_n_steps=0",
        f"hydra.run.dir={tmp_path / name}",
        "-q",
        *extra,
    )


def weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_a_resumed_dropout_run_equals_the_uninterrupted_one(tmp_path, mnist_root):
    whole = train(tmp_path, "whole", mnist_root)
    assert whole.code == 0, whole
    stop = f"model.stop_file={tmp_path / 'stop-sent'}"
    stopped = train(tmp_path, "stopped", mnist_root, "model.stop_at_step=14", stop)
    assert stopped.code == 3, stopped
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    assert state["state"]["step"] == 14 and state["state"]["epoch"] == 1  # 10 steps an epoch
    resumed = convbench("resume", str(tmp_path / "stopped"), *TRUSTED)
    assert resumed.code == 0, resumed
    ours, theirs = weights(tmp_path / "stopped"), weights(tmp_path / "whole")
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    kept = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "step")
    history = [
        [
            {key: epoch[key] for key in kept}
            for epoch in json.loads((run / "metrics.json").read_text())["history"]
        ]
        for run in (tmp_path / "stopped", tmp_path / "whole")
    ]
    assert history[0] == history[1]
