"""The engine on tiny in-memory data: metrics it reports, confusion matrix, auxiliary heads.

The loop talks to real parts: a TensorBoard writer in the test's folder, the progress display
used off a terminal, a real checkpointer and stop request.
"""

import pytest
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from convbench.data.batches import Batches, Split
from convbench.engine import (
    EngineOptions,
    Optimization,
    RunIO,
    TrainState,
    evaluate,
    train_one_epoch,
)
from convbench.models.googlenet import GoogLeNet
from convbench.monitor.console import NoProgress
from convbench.run.checkpoint import Checkpointer, Settled
from convbench.run.folder import RunFolder
from convbench.run.ranks import Solo
from convbench.run.signals import StopRequest


def _optimization(optimizer) -> Optimization:
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return Optimization(nn.CrossEntropyLoss(), optimizer, scheduler, scaler)


@pytest.fixture
def io_for(tmp_path):
    """RunIO(model, optimization[, checkpointer class]) of real parts writing under the test's
    folder."""
    writers = []

    def make(model, optimization: Optimization, checkpointer_class=Checkpointer) -> RunIO:
        writer = SummaryWriter(str(tmp_path / "tb"))
        writers.append(writer)
        settled = Settled(
            precision="fp32", channels_last=False, mean=[0.5], std=[0.5], fingerprint={}, reasons={}
        )
        checkpointer = checkpointer_class(
            RunFolder(tmp_path),
            epochs=2,
            config={"model": {}},
            settled=settled,
            model=model,
            optimization=optimization,
            writer=writer,
            group=Solo(),
        )
        return RunIO(
            writer=writer,
            progress=NoProgress(),
            checkpointer=checkpointer,
            stop=StopRequest(),
            group=Solo(),
        )

    yield make
    for writer in writers:
        writer.close()


def _batches(n=64, size=8, channels=1, batch_size=16, seed=0) -> Batches:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(
        0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator
    )
    labels = torch.arange(n) % 4
    images[:, :, : size // 2] = (labels * 60).to(torch.uint8).view(-1, 1, 1, 1)  # learnable
    return Batches(
        Split(images, labels),
        batch_size=batch_size,
        device=torch.device("cpu"),
        mean=[0.5] * channels,
        std=[0.5] * channels,
        image_size=size,
        shuffle=True,
    )


def _epoch(io_for, model, batches, optimizer, state, options=None):
    optimization = _optimization(optimizer)
    return train_one_epoch(
        model,
        batches,
        optimization,
        state=state,
        options=options or EngineOptions(),
        io=io_for(model, optimization),
    )


def test_epoch_metrics_are_the_means_over_the_epoch_and_training_learns(io_for):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batches, state = _batches(), TrainState()
    first = _epoch(io_for, model, batches, optimizer, state)
    assert state.step == 4 and state.batch_in_epoch == 4
    assert 0 < first["acc"] <= 1 and first["loss"] > 0 and first["images_per_sec"] > 0
    state.epoch, state.batch_in_epoch, state.sums = 1, 0, None
    for _ in range(20):
        later = _epoch(io_for, model, batches, optimizer, state)
        state.epoch, state.batch_in_epoch, state.sums = state.epoch + 1, 0, None
    assert later["loss"] < first["loss"] and later["acc"] > first["acc"]


def test_epoch_loss_equals_the_sample_weighted_mean_of_step_losses(io_for):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # frozen: every step sees one model
    batches = _batches(n=40, batch_size=16)  # batches of 16, 16 and 8
    reported = _epoch(io_for, model, batches, optimizer, TrainState())
    with torch.no_grad():
        losses = [
            nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in batches.epoch(0)
        ]
    assert abs(reported["loss"] - float(sum(losses)) / 40) < 1e-5


def test_evaluate_confusion_matrix_counts_predictions():
    class Constant(nn.Module):  # always predicts class 2
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 2), 4).float()

    result = evaluate(Constant(), _batches(n=40), nn.CrossEntropyLoss(), num_classes=4)
    confusion = result["confusion"]
    assert confusion.sum() == 40 and confusion[:, 2].sum() == 40
    assert confusion[2, 2] == 10 and result["acc"] == 0.25


def test_googlenet_auxiliary_heads_are_trained_when_on(io_for):
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=4, in_channels=3, image_size=32, aux_heads=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    grads = {}

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            grads.update({n: p.grad for n, p in model.named_parameters() if "aux" in n})
            return super().step(closure)

    optimizer = Recorder(model.parameters(), lr=0.01)
    _epoch(io_for, model, _batches(n=4, size=32, channels=3, batch_size=4), optimizer, TrainState())
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_checkpoints_never_fall_between_an_epochs_last_step_and_its_validation(io_for):
    """A last.pt written after the last step but before validation would make a resume log that
    step's validation scalars twice; the epoch-end save (after validation) covers that step."""
    from convbench.engine import fit

    saves = []

    class RecordingCheckpointer(Checkpointer):
        def save(self, state, is_best):
            saves.append((state.epoch, state.batch_in_epoch))
            super().save(state, is_best)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    optimization = _optimization(torch.optim.SGD(model.parameters(), lr=0.1))
    batches = {"train": _batches(n=64, batch_size=16), "val": _batches(n=32, batch_size=16)}
    io = io_for(model, optimization, RecordingCheckpointer)
    fit(
        model,
        batches,
        optimization,
        state=TrainState(),
        epochs=2,
        num_classes=4,
        options=EngineOptions(checkpoint_every_n_steps=1),
        io=io,
    )
    # 4 steps per epoch: periodic saves after steps 1-3 of each epoch, then the epoch-end save.
    assert saves == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0)]
