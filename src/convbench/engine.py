"""The training engine: `train_one_epoch`, `evaluate`, `fit`. Read it top to bottom.

Functions take objects (model, batches, optimizer, writer), never the config. The step order is
fixed: lr -> forward -> loss -> backward -> clip -> step -> zero_grad -> log. The learning rate
changes once per epoch (schedulers count epochs).

The hot path never waits for the device: each step's loss and correct count go into the epoch's
buffers on the device (`EpochBuffers`), and the host reads them only at sync points: every
`log_every_n_steps` steps, at a checkpoint, on a stop request, at the end of the epoch. At each
sync point the buffered losses are checked first: a non-finite loss stops the run before anything
is saved, so no checkpoint ever holds diverged weights.
"""

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from convbench.errors import NonFiniteLoss, RunInterrupted
from convbench.monitor.pictures import (
    log_feature_maps,
    log_filters,
    log_histograms,
    log_sample_batch,
)

log = logging.getLogger("convbench")


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How the loop trains and reports; each field is the trainer setting of the same name."""

    grad_clip_norm: float | None = None  # clip the global gradient norm; None or 0: off
    log_every_n_steps: int = 0  # a train/loss_step point every N steps; 0: none, no step syncs
    checkpoint_every_n_steps: int = 0  # also save last.pt every N steps; 0: at epoch ends only
    nonfinite_skips: int = 0  # skip up to N non-finite steps (one host sync per step); 0: stop
    autocast_dtype: torch.dtype | None = None  # bf16/fp16 autocast; None runs in fp32
    log_images: bool = True  # the first batch; after every epoch first-layer filters, feature maps
    histogram_every_n_epochs: int = 0  # weight/gradient histograms; 0: off
    early_stop_patience: int = 0  # stop after N epochs without a better validation; 0: off
    estimate_after_steps: int = 30  # one line with images/s and the run's estimated time


@dataclass
class Optimization:
    """What turns a batch's loss into new weights."""

    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler, stepped once per epoch
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    # trainer.ema: torch.optim.swa_utils.AveragedModel, updated after every step; it is what
    # validation sees (and best.pt holds). None: off.
    ema: Any = None

    def evaluated(self, model):
        """The weights validation and the test use: the average when there is one."""
        return self.ema if self.ema is not None else model


@dataclass
class RunIO:
    """What the loop reports to and hears from the world outside it. In a distributed run
    rank 0 gets the real writer and progress display, the other ranks silent ones, and `group`
    adds up what makes a metric over the ranks (convbench.run.ranks)."""

    writer: Any  # TensorBoard: convbench.monitor.eventlog.EventLog (or a SummaryWriter)
    progress: Any  # convbench.monitor.console.BarProgress or NoProgress
    checkpointer: Any  # convbench.run.checkpoint.Checkpointer
    stop: Any  # convbench.run.signals.StopRequest: `.requested` is a signal name or None
    group: Any  # convbench.run.ranks.Solo, or its Group in a distributed run: sums over ranks


@dataclass
class StepLosses:
    """Host copies of the first steps of an epoch's buffers."""

    loss: torch.Tensor  # float [steps]
    correct: torch.Tensor  # long [steps]
    size: torch.Tensor  # float [steps]; 0 for a skipped step

    def totals(self, since: int) -> torch.Tensor:
        """[loss sum, correct, images, loss sum since `since`, images since, non-finite steps]
        (losses weighted by their batch's size): what adds up over ranks."""
        weighted = self.loss * self.size
        sums = [
            weighted.sum(),
            self.correct.sum(),
            self.size.sum(),
            weighted[since:].sum(),
            self.size[since:].sum(),
            (~torch.isfinite(self.loss)).sum(),
        ]
        return torch.tensor([value.item() for value in sums], dtype=torch.float64)

    def first_nonfinite(self) -> int | None:
        bad = (~torch.isfinite(self.loss)).nonzero()
        return int(bad[0]) if len(bad) else None


@dataclass
class EpochBuffers:
    """Per-step loss, correct count and batch size of one epoch, kept on the device."""

    loss: torch.Tensor  # float [steps]
    correct: torch.Tensor  # long [steps]
    size: torch.Tensor  # float [steps]

    @classmethod
    def for_epoch(cls, batches) -> "EpochBuffers":
        # Batch sizes are known up front (all full but the last), so the hot loop writes only the
        # loss and the correct count; a skipped step sets its size to 0.
        steps, device = len(batches), batches.device
        size = torch.full((steps,), float(batches.batch_size), device=device)
        size[-1] = batches.num_samples - batches.batch_size * (steps - 1)
        loss = torch.zeros(steps, device=device)
        return cls(loss, torch.zeros(steps, device=device, dtype=torch.long), size)

    def record(self, index: int, loss, logits, labels) -> None:
        self.loss[index] = loss.detach()
        self.correct[index] = (logits.argmax(1) == labels).sum()

    def skip(self, index: int) -> None:
        self.size[index] = 0  # a skipped step counts in neither loss nor accuracy

    def read(self, upto: int) -> StepLosses:
        # Host sync: waits for every queued step, then copies the first `upto` slots.
        loss = self.loss[:upto].float().cpu()
        return StepLosses(loss, self.correct[:upto].cpu(), self.size[:upto].cpu())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "size": self.size.cpu()}

    @classmethod
    def from_state_dict(cls, saved: dict, device: torch.device) -> "EpochBuffers":
        return cls(**{name: saved[name].to(device) for name in ("loss", "correct", "size")})


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint, so a resumed run is the same run."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    best_val_acc: float = -math.inf
    best_epoch: int = 0
    skipped_steps: int = 0  # non-finite steps skipped (trainer.nonfinite_skips)
    stopped_early: bool = False  # trainer.early_stop_patience ended the run
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    epoch_buffers: EpochBuffers | None = None  # the unfinished epoch's, on the device

    def state_dict(self) -> dict:
        """Plain values and CPU tensors, as a checkpoint stores them."""
        saved = {name: value for name, value in vars(self).items() if name != "epoch_buffers"}
        buffers = self.epoch_buffers
        saved["epoch_buffers"] = None if buffers is None else buffers.state_dict()
        return saved

    @classmethod
    def from_state_dict(cls, saved: dict, device: torch.device) -> "TrainState":
        values = dict(saved)
        buffers = values.pop("epoch_buffers")
        state = cls(**values)
        if buffers is not None:
            state.epoch_buffers = EpochBuffers.from_state_dict(buffers, device)
        return state


def _due(count: int, every: int) -> bool:
    """Whether `count` is a multiple of the interval `every` (0: never)."""
    return every > 0 and count % every == 0


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _raise_if_nonfinite(losses: StepLosses, state: TrainState, anywhere: bool) -> None:
    """Stop when a loss of this epoch was NaN or infinite (`anywhere`: on any rank)."""
    if not anywhere:
        return
    bad = losses.first_nonfinite()
    value, where = "NaN or infinite", "on another process of this run"
    if bad is not None:
        value, where = losses.loss[bad].item(), f"step {state.step - (len(losses.loss) - bad) + 1}"
    raise NonFiniteLoss(
        f"the training loss became {value} at epoch {state.epoch + 1}, {where}; the run stopped "
        "without saving these weights, so checkpoints/last.pt and best.pt still hold the last "
        "good state. Lower optimizer.lr, set trainer.grad_clip_norm, or use "
        "trainer.nonfinite_skips=N to skip up to N bad steps."
    )


def _sync_point(buffers: EpochBuffers, upto: int, state, io: RunIO, since: int, point: bool):
    """Read the epoch's first `upto` steps from the device, add them up over the ranks, stop on
    a non-finite loss, show the running means, and (when `point`) log a loss point: the mean
    loss of the steps since the last one (a point per step cost ~45 us of host time each, 2-4%
    of a small model's step). Returns the epoch's means so far and the slots now logged."""
    losses = buffers.read(upto)
    loss, correct, seen, recent_loss, recent_seen, bad = io.group.sum(losses.totals(since))
    _raise_if_nonfinite(losses, state, anywhere=bool(bad))
    means = {"loss": (loss / seen).item(), "acc": (correct / seen).item()} if seen else {}
    io.progress.show(**means)
    if point and recent_seen > 0:
        io.writer.add_scalar("train/loss_step", (recent_loss / recent_seen).item(), state.step)
        since = upto
    return means, since


def _skip_nonfinite(loss: torch.Tensor, state: TrainState, allowed: int, group) -> bool:
    """trainer.nonfinite_skips: whether to drop this step (every rank drops it together, or
    DDP's gradient exchange would wait forever); stops once more than `allowed`."""
    finite = torch.isfinite(loss).item()  # host sync, once per step: the price of this mode
    if not group.any(not finite):
        return False
    state.skipped_steps += 1
    log.warning(
        "non-finite loss at step %d skipped (%d so far)", state.step + 1, state.skipped_steps
    )
    if state.skipped_steps > allowed:
        raise NonFiniteLoss(
            f"more than trainer.nonfinite_skips={allowed} non-finite steps (at epoch "
            f"{state.epoch + 1}, step {state.step + 1}); the last good state is in "
            "checkpoints/last.pt. Lower optimizer.lr or set trainer.grad_clip_norm."
        )
    return True


def _log_estimate(buffers, upto, trained, started, batches, state, epochs) -> None:
    """One line after the first steps of this process: images/s so far and the time the rest
    of the run's training should take at that pace (validation and tests come on top)."""
    buffers.read(upto)  # host sync: the steps so far have really run
    rate = trained / max(time.perf_counter() - started, 1e-9)
    left = batches.num_samples * (epochs - state.epoch) - state.batch_in_epoch * batches.batch_size
    minutes, seconds = divmod(round(max(left, 0) / rate), 60)
    log.info(
        "after %d steps: %s images/s; the %d epoch(s) left should take about %s of training",
        upto,
        f"{rate:,.0f}",
        epochs - state.epoch,
        f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {seconds} s",
    )


def _stop_requested(io: RunIO) -> str | None:
    """The stop signal's name when this rank, or any rank, got one (all stop at one step)."""
    if not io.group.any(io.stop.requested is not None):  # one tiny CPU exchange per step
        return None
    return io.stop.requested or "a stop signal on another process"


def _backward_and_step(model, loss, optimization: Optimization, grad_clip_norm) -> None:
    scaler, optimizer = optimization.scaler, optimization.optimizer
    scaler.scale(loss).backward()
    if grad_clip_norm:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    if optimization.ema is not None:
        optimization.ema.update_parameters(model)


def train_one_epoch(
    model,
    batches,
    optimization: Optimization,
    state: TrainState,
    *,
    options: EngineOptions,
    io: RunIO,
    epochs: int = 0,
) -> dict:
    """Train on the rest of epoch `state.epoch`; returns mean loss, accuracy and images/s.
    `epochs`: the run's, for a one-line estimate of its time after the first steps (0: none)."""
    model.train()
    if state.epoch_buffers is None:
        state.epoch_buffers = EpochBuffers.for_epoch(batches)
    buffers, steps = state.epoch_buffers, len(batches)
    logged = state.batch_in_epoch  # buffer slots already in a train/loss_step point
    write_points = options.log_every_n_steps > 0
    histogram_at = steps - 1 if _due(state.epoch + 1, options.histogram_every_n_epochs) else -1
    aux_loss = getattr(model, "aux_loss", None)  # GoogLeNet's auxiliary heads add their term
    started, trained = time.perf_counter(), 0
    first = state.batch_in_epoch
    for index, (images, labels) in enumerate(batches.epoch(state.epoch, first), first):
        # forward and loss
        with _autocast(batches.device, options.autocast_dtype):
            logits = model(images)
            loss = optimization.loss_fn(logits, labels)
            if aux_loss is not None:
                loss = loss + aux_loss(optimization.loss_fn, labels)
        # backward, clip, step, zero_grad (a non-finite step is dropped only when asked to)
        allowed = options.nonfinite_skips
        if allowed and _skip_nonfinite(loss, state, allowed, io.group):
            buffers.skip(index)
        else:
            _backward_and_step(model, loss, optimization, options.grad_clip_norm)
            if index == histogram_at:  # the epoch's last gradients, before they are cleared
                log_histograms(io.writer, model, state.step + 1)
            optimization.optimizer.zero_grad(set_to_none=True)
            buffers.record(index, loss, logits, labels)
        state.step += 1
        state.batch_in_epoch = index + 1
        trained += len(labels)
        io.progress.advance(len(labels))
        if index + 1 - first == options.estimate_after_steps and epochs:
            _log_estimate(buffers, index + 1, trained, started, batches, state, epochs)
        # log and checkpoint. No periodic save on the epoch's last batch: the epoch-end save
        # follows validation at the same step, and a last.pt written before validation would let
        # a resume log that step's validation scalars a second time.
        periodic_save = _due(state.step, options.checkpoint_every_n_steps) and index + 1 < steps
        stop = _stop_requested(io)
        if periodic_save or stop or _due(state.step, options.log_every_n_steps):
            _, logged = _sync_point(buffers, index + 1, state, io, logged, write_points)
        if periodic_save or stop:
            io.checkpointer.save(state, is_best=False)
        if stop:
            raise RunInterrupted(stop)
    means, _ = _sync_point(buffers, steps, state, io, logged, write_points)
    elapsed = time.perf_counter() - started
    return {
        "loss": means.get("loss", 0.0),
        "acc": means.get("acc", 0.0),
        "images_per_sec": trained / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
    }


@torch.inference_mode()
def evaluate(model, batches, loss_fn, *, num_classes: int, autocast_dtype=None, group=None) -> dict:
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted);
    with `group`, over the shards of every rank."""
    model.eval()
    device = batches.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros(num_classes * num_classes, device=device, dtype=torch.long)
    for images, labels in batches.epoch(0):
        with _autocast(device, autocast_dtype):
            logits = model(images)
        loss_sum += loss_fn(logits.float(), labels) * len(labels)
        confusion += torch.bincount(
            labels * num_classes + logits.argmax(1), minlength=num_classes**2
        )
    if group is not None:
        loss_sum, confusion = group.sum(loss_sum), group.sum(confusion)
    confusion = confusion.view(num_classes, num_classes).cpu()  # host sync, once per evaluation
    seen = int(confusion.sum())
    return {
        "loss": loss_sum.item() / max(seen, 1),
        "acc": confusion.diagonal().sum().item() / max(seen, 1),
        "confusion": confusion,
    }


def _log_epoch(writer, state: TrainState, epochs: int, train: dict, val: dict, lr: float) -> None:
    scalars = {
        "train/loss": train["loss"],
        "train/acc": train["acc"],
        "val/loss": val["loss"],
        "val/acc": val["acc"],
        "val/acc_best": state.best_val_acc,
        "lr": lr,
        "perf/images_per_sec": train["images_per_sec"],
    }
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, state.step)
    images_per_sec = f"{train['images_per_sec']:,.0f}"
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.4g | %s img/s",
        *(state.epoch, epochs, train["loss"], train["acc"], val["loss"], val["acc"], lr),
        images_per_sec,
    )


def _close_epoch(state: TrainState, train: dict, val: dict, lr: float) -> bool:
    """Count the epoch as done in `state`; returns whether its validation accuracy is the best."""
    state.epoch, state.batch_in_epoch, state.epoch_buffers = state.epoch + 1, 0, None
    is_best = val["acc"] > state.best_val_acc
    if is_best:
        state.best_val_acc, state.best_epoch = val["acc"], state.epoch
    record = {"epoch": state.epoch, "step": state.step, "lr": lr}
    record |= {f"train_{name}": value for name, value in train.items()}
    state.history.append(record | {"val_loss": val["loss"], "val_acc": val["acc"]})
    return is_best


def fit(
    model,
    batches: dict,
    optimization: Optimization,
    state: TrainState,
    *,
    epochs: int,
    num_classes: int,
    options: EngineOptions,
    io: RunIO,
) -> TrainState:
    """Train from `state` to `epochs`, validating and checkpointing after every epoch.

    `batches` maps "train" and "val" to `Batches`. `io.stop.requested` (set by a signal handler)
    ends the run after the current step with last.pt written (`RunInterrupted`).
    """
    first_epoch = True
    while state.epoch < epochs and not state.stopped_early:
        lr = optimization.optimizer.param_groups[0]["lr"]
        io.progress.start_epoch(state.epoch + 1, epochs, batches["train"].num_samples)
        train = train_one_epoch(
            model,
            batches["train"],
            optimization,
            state,
            options=options,
            io=io,
            epochs=epochs if first_epoch else 0,  # the estimate, once per process
        )
        first_epoch = False
        val = evaluate(
            optimization.evaluated(model),
            batches["val"],
            optimization.loss_fn,
            num_classes=num_classes,
            autocast_dtype=options.autocast_dtype,
            group=io.group,
        )
        optimization.scheduler.step()
        is_best = _close_epoch(state, train, val, lr)
        _log_epoch(io.writer, state, epochs, train, val, lr)
        if options.log_images:
            if state.epoch == 1:
                # The first batch as trained, logged with the epoch's other images rather than
                # before the first step (which would wait for PIL's import and the PNG encoding),
                # at this step so that a resume's purge covers it like any other event.
                log_sample_batch(io.writer, batches["train"], state.step)
            # Pictures after the epoch, never inside its steps: the first layer's filters, and
            # every conv layer's outputs for the same few validation images.
            log_filters(io.writer, model, state.step, state.epoch)
            log_feature_maps(io.writer, model, batches["val"], state.step, state.epoch)
        patience = options.early_stop_patience
        if patience and state.epoch - state.best_epoch >= patience and state.epoch < epochs:
            state.stopped_early = True
            log.info("stopping early: no better validation accuracy for %d epochs", patience)
        io.checkpointer.save(state, is_best=is_best)
        stop = _stop_requested(io)
        if stop:
            raise RunInterrupted(stop)
    return state
