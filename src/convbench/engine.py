"""The training engine: `train_one_epoch`, `evaluate`, `fit`. Read it top to bottom.

Functions take objects (model, batches, optimizer, writer), never the config. One training step
is: forward -> loss -> backward -> clip -> step -> zero_grad, then the step's loss and correct
count are added to the epoch's running sums. The learning rate changes once per epoch
(schedulers count epochs).

The hot path never waits for the device: the running sums stay on the device (`EpochSums`), and
the host reads them only at sync points: every `log_every_n_steps` steps, at a checkpoint, on a
stop request, at the end of the epoch. At each sync point the sums are checked first: a
non-finite loss stops the run before anything is saved, so no checkpoint ever holds diverged
weights.
"""

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from convbench.errors import Diverged, RunInterrupted
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
    # An epoch's mean training loss above this is a diverged run, not a slow one (build sets
    # 100 x ln(classes): 230 for 10 classes, where an untrained net starts near 2.3).
    max_loss: float = math.inf
    classes: tuple[str, ...] = ()  # the dataset's class names, over the training samples shown


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
    # Called with (epoch, validation metrics) once the epoch is saved; a study's trial reports
    # to its pruner there, which may end the run (convbench.run.pruning). None: nothing.
    after_epoch: Any = None


@dataclass
class EpochSums:
    """The epoch's running sums: the loss weighted by batch size and the correct predictions
    on the device (two in-place adds a step, never read there), the images on the host. A
    non-finite loss makes the loss sum non-finite, which the next sync point sees."""

    loss: torch.Tensor  # float64 scalar on the device: sum of loss x batch size
    correct: torch.Tensor  # int64 scalar on the device
    images: int = 0
    logged: tuple[float, int] = (0.0, 0)  # loss sum and images at the last train/loss_step
    checked_step: int = 0  # the last step a sync point found every loss finite up to

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochSums":
        return cls(
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss.add_(loss.detach(), alpha=len(labels))
        self.correct.add_((logits.argmax(1) == labels).sum())
        self.images += len(labels)

    def read(self, group) -> tuple[float, float, float]:
        """(loss sum, correct, images) over every rank: a host sync."""
        local = torch.stack([self.loss, self.correct.double(), self.loss.new_tensor(self.images)])
        return tuple(group.sum(local).tolist())

    def state_dict(self) -> dict:
        return {
            "loss": self.loss.cpu(),
            "correct": self.correct.cpu(),
            "images": self.images,
            "logged": list(self.logged),
            "checked_step": self.checked_step,
        }

    @classmethod
    def from_state_dict(cls, saved: dict, device: torch.device) -> "EpochSums":
        return cls(
            saved["loss"].to(device),
            saved["correct"].to(device),
            saved["images"],
            tuple(saved["logged"]),
            saved["checked_step"],
        )


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
    sums: EpochSums | None = None  # the unfinished epoch's, on the device

    def state_dict(self) -> dict:
        """Plain values and CPU tensors, as a checkpoint stores them."""
        saved = {name: value for name, value in vars(self).items() if name != "sums"}
        saved["sums"] = None if self.sums is None else self.sums.state_dict()
        return saved

    @classmethod
    def from_state_dict(cls, saved: dict, device: torch.device) -> "TrainState":
        values = dict(saved)
        sums = values.pop("sums")
        state = cls(**values)
        if sums is not None:
            state.sums = EpochSums.from_state_dict(sums, device)
        return state


def _due(count: int, every: int) -> bool:
    """Whether `count` is a multiple of the interval `every` (0: never)."""
    return every > 0 and count % every == 0


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model itself, inside DistributedDataParallel (`.module`) and torch.compile
    (`._orig_mod`), which do not forward its own attributes (GoogLeNet's aux_loss)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def train_one_epoch(
    model,
    batches,
    optimization: Optimization,
    *,
    state: TrainState,
    options: EngineOptions,
    io: RunIO,
) -> dict:
    """Train on the rest of epoch `state.epoch`; returns its mean loss and accuracy, and the
    images/s and seconds of this call."""
    model.train()
    if state.sums is None:
        state.sums = EpochSums.zeros(batches.device)
        state.sums.checked_step = state.step  # a NaN is looked for from this epoch's first step
    aux_loss = getattr(_unwrapped(model), "aux_loss", None)  # GoogLeNet's auxiliary heads
    last_batch = len(batches) - 1
    histograms_due = _due(state.epoch + 1, options.histogram_every_n_epochs)
    started, trained = time.perf_counter(), 0
    for images, labels in batches.epoch(state.epoch, state.batch_in_epoch):
        with _autocast(batches.device, options.autocast_dtype):
            logits = model(images)
            loss = optimization.loss_fn(logits, labels)
            if aux_loss is not None:
                loss = loss + aux_loss(optimization.loss_fn, labels)
        if options.nonfinite_skips and _skip_nonfinite(loss, state, options=options, io=io):
            state.batch_in_epoch += 1  # the batch is dropped, not trained
            continue
        optimization.scaler.scale(loss).backward()
        if options.grad_clip_norm:
            optimization.scaler.unscale_(optimization.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip_norm)
        optimization.scaler.step(optimization.optimizer)
        optimization.scaler.update()
        if histograms_due and state.batch_in_epoch == last_batch:  # the epoch's last gradients
            log_histograms(io.writer, model, state.step + 1)
        optimization.optimizer.zero_grad(set_to_none=True)
        if optimization.ema is not None:
            optimization.ema.update_parameters(model)
        state.sums.add(loss, logits, labels)
        state.step += 1
        state.batch_in_epoch += 1
        trained += len(labels)
        io.progress.advance(len(labels))
        _after_step(state, io, options=options, last_step=state.batch_in_epoch > last_batch)
    means = _sync_point(state, io, options)
    elapsed = time.perf_counter() - started
    images_per_sec = trained / elapsed if elapsed > 0 else 0.0
    return {**means, "images_per_sec": images_per_sec, "seconds": elapsed, "images": trained}


def _after_step(state: TrainState, io: RunIO, *, options: EngineOptions, last_step: bool) -> None:
    """Log, check and save at the intervals asked for; stop here on a stop signal (last.pt
    written first). No periodic save on the epoch's last step: the epoch-end save follows
    validation at the same step, and a last.pt written before validation would let a resume
    log that step's validation scalars a second time."""
    periodic_save = _due(state.step, options.checkpoint_every_n_steps) and not last_step
    stop = _stop_requested(io)
    if periodic_save or stop or _due(state.step, options.log_every_n_steps):
        _sync_point(state, io, options)
    if periodic_save or stop:
        io.checkpointer.save(state, is_best=False)
    if stop:
        raise RunInterrupted(stop)


def _sync_point(state: TrainState, io: RunIO, options: EngineOptions) -> dict:
    """Read the epoch's sums from the device, added up over the ranks; stop on a non-finite or
    insane loss; show the running means, and (with trainer.log_every_n_steps) log a
    train/loss_step point: the mean loss of the steps since the last one (a point per step cost
    ~45 us of host time each, 2-4% of a small model's step). Returns the epoch's means so far."""
    loss, correct, images = state.sums.read(io.group)
    if not math.isfinite(loss) or (images and loss / images > options.max_loss):
        first = state.sums.checked_step + 1
        what = "NaN or infinite" if not math.isfinite(loss) else f"{loss / images:.3g} on average"
        raise _diverged(
            f"the training loss became {what} in epoch {state.epoch + 1} (between "
            f"steps {first} and {state.step})",
            io.checkpointer,
        )
    state.sums.checked_step = state.step
    write_point = options.log_every_n_steps > 0
    means = {"loss": loss / images, "acc": correct / images} if images else {}
    io.progress.show(**means)
    logged_loss, logged_images = state.sums.logged
    if write_point and images > logged_images:
        recent = (loss - logged_loss) / (images - logged_images)
        io.writer.add_scalar("train/loss_step", recent, state.step)
        state.sums.logged = (loss, images)
    return {"loss": means.get("loss", 0.0), "acc": means.get("acc", 0.0)}


def _diverged(what: str, checkpointer) -> Diverged:
    """The paragraph for a diverged run: what went wrong, what is kept, what to change."""
    kept = (
        "last.pt and best.pt keep the last good epoch's state"
        if checkpointer.saved()
        else "no checkpoint had been written yet"
    )
    return Diverged(
        f"{what}: the run diverged and stopped without saving these weights ({kept}), and it "
        "is not reported as finished. Lower optimizer.lr, check optimizer.momentum and the "
        "other optimizer.* values, set trainer.grad_clip_norm, or use trainer.nonfinite_skips=N "
        "to skip up to N bad steps."
    )


def _skip_nonfinite(loss: torch.Tensor, state: TrainState, *, options: EngineOptions, io) -> bool:
    """trainer.nonfinite_skips: whether to drop this step (every rank drops it together, or
    DDP's gradient exchange would wait forever); stops at the first bad step beyond the
    allowed number."""
    finite = torch.isfinite(loss).item()  # host sync, once per step: the price of this mode
    if not io.group.any(not finite):
        return False
    state.skipped_steps += 1
    log.warning(
        "non-finite loss at step %d skipped (%d so far)", state.step + 1, state.skipped_steps
    )
    if state.skipped_steps > options.nonfinite_skips:
        raise _diverged(
            f"more than trainer.nonfinite_skips={options.nonfinite_skips} steps had a NaN or "
            f"infinite loss (the last at epoch {state.epoch + 1}, step {state.step + 1})",
            io.checkpointer,
        )
    return True


def _stop_requested(io: RunIO) -> str | None:
    """The stop signal's name when this rank, or any rank, got one (all stop at one step)."""
    if not io.group.any(io.stop.requested is not None):  # one tiny CPU exchange per step
        return None
    return io.stop.requested or "a stop signal on another process"


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


def _log_epoch(
    writer, state: TrainState, *, epochs: int, train: dict, val: dict, lr: float
) -> None:
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
        # The same on an axis of epochs, where runs with other batch counts line up.
        writer.add_scalar(f"by_epoch/{tag.replace('/', '_')}", value, state.epoch)
    images_per_sec = f"{train['images_per_sec']:,.0f}"
    numbers = (train["loss"], train["acc"], val["loss"], val["acc"])
    short = "epoch {}/{}  loss {:.4f} acc {:.4f} | val loss {:.4f} acc {:.4f}".format(
        state.epoch, epochs, *numbers
    )
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.4g | %s img/s",
        *(state.epoch, epochs, *numbers, lr),
        images_per_sec,
        extra={"short": short},  # a terminal of 80 columns: no room for lr and images/s
    )


def _close_epoch(state: TrainState, *, train: dict, val: dict, lr: float) -> bool:
    """Count the epoch as done in `state`; returns whether its validation accuracy is the best."""
    state.epoch, state.batch_in_epoch, state.sums = state.epoch + 1, 0, None
    is_best = val["acc"] > state.best_val_acc
    if is_best:
        state.best_val_acc, state.best_epoch = val["acc"], state.epoch
    record = {"epoch": state.epoch, "step": state.step, "lr": lr}
    record |= {f"train_{name}": train[name] for name in ("loss", "acc", "images_per_sec")}
    record["train_seconds"] = train["seconds"]
    state.history.append(record | {"val_loss": val["loss"], "val_acc": val["acc"]})
    return is_best


def _log_pictures(writer, model, *, batches: dict, state: TrainState, classes=()) -> None:
    """After the epoch, never inside its steps: the first batch as trained (once, at this step,
    so that a resume's purge covers it like any other event), the first layer's filters, and
    every conv layer's outputs for the same few validation images."""
    if state.epoch == 1:
        log_sample_batch(writer, batches["train"], state.step, classes=classes)
    log_filters(writer, model, step=state.step, epoch=state.epoch)
    log_feature_maps(writer, model, batches["val"], step=state.step, epoch=state.epoch)


def _epoch_seconds(seconds: float, *, train: dict, batches) -> float:
    """What a whole epoch takes at this epoch's pace, its validation and pictures included (a
    resumed, partial epoch counts per image)."""
    return seconds + train["seconds"] * (batches.num_samples / max(train["images"], 1) - 1)


def duration(seconds: float) -> str:
    """4.2 s, 2 min 30 s, 1 h 5 min."""
    if seconds < 60:
        return f"{max(seconds, 0):.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return (
        f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {seconds} s"
    )


def fit(
    model,
    batches: dict,
    optimization: Optimization,
    *,
    state: TrainState,
    epochs: int,
    num_classes: int,
    options: EngineOptions,
    io: RunIO,
) -> TrainState:
    """Train from `state` to `epochs`, validating and checkpointing after every epoch.

    `batches` maps "train" and "val" to `Batches`. `io.stop.requested` (set by a signal handler)
    ends the run after the current step with last.pt written (`RunInterrupted`).
    """
    estimated = False
    while state.epoch < epochs and not state.stopped_early:
        started = time.perf_counter()
        lr = optimization.optimizer.param_groups[0]["lr"]
        io.progress.start_epoch(state.epoch + 1, epochs, batches["train"].num_samples)
        train = train_one_epoch(
            model, batches["train"], optimization, state=state, options=options, io=io
        )
        with io.progress.phase("validating"):
            val = evaluate(
                optimization.evaluated(model),
                batches["val"],
                optimization.loss_fn,
                num_classes=num_classes,
                autocast_dtype=options.autocast_dtype,
                group=io.group,
            )
        if not math.isfinite(val["loss"]):
            raise _diverged(
                f"the validation loss became NaN or infinite after epoch {state.epoch + 1}",
                io.checkpointer,
            )
        optimization.scheduler.step()
        is_best = _close_epoch(state, train=train, val=val, lr=lr)
        _log_epoch(io.writer, state, epochs=epochs, train=train, val=val, lr=lr)
        if options.log_images:
            with io.progress.phase("drawing pictures"):
                _log_pictures(
                    io.writer, model, batches=batches, state=state, classes=options.classes
                )
        patience = options.early_stop_patience
        if patience and state.epoch - state.best_epoch >= patience and state.epoch < epochs:
            state.stopped_early = True
            log.info("stopping early: no better validation accuracy for %d epochs", patience)
        io.checkpointer.save(state, is_best=is_best)
        if io.after_epoch is not None:
            io.after_epoch(state.epoch, val)
        full_epoch = _epoch_seconds(
            time.perf_counter() - started, train=train, batches=batches["train"]
        )
        left = full_epoch * (epochs - state.epoch)
        io.progress.run_left(left)
        if not estimated and state.epoch < epochs and not state.stopped_early:
            log.info(
                "estimate: an epoch takes %.1f s here; the %d epoch(s) left: about %s",
                full_epoch,
                epochs - state.epoch,
                duration(left),
            )
        estimated = True
        stop = _stop_requested(io)
        if stop:
            raise RunInterrupted(stop)
    return state
