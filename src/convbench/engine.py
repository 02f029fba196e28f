"""The training engine: `train_one_epoch`, `evaluate`, `fit`. Read it top to bottom.

Functions take objects (model, batches, optimizer, writer), never the config. The step order is
fixed: lr -> forward -> loss -> backward -> clip -> step -> zero_grad -> log. The learning rate
changes once per epoch (schedulers count epochs).

The hot path never waits for the device: each step's loss and correct count go into per-epoch
buffers on the device, and the host reads them only at sync points (every `log_every_n_steps`
steps, at a checkpoint, on a stop request, at the end of the epoch). At each sync point the
buffered losses are checked: a non-finite loss stops the run before anything is saved, so no
checkpoint ever holds diverged weights.
"""

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from convbench.errors import NonFiniteLoss, RunInterrupted
from convbench.visuals import log_filters, log_histograms, log_sample_batch

log = logging.getLogger("convbench")


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint, so a resumed run is the same run."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    best_val_acc: float = -math.inf
    best_epoch: int = 0
    skipped_steps: int = 0  # non-finite steps skipped (trainer.nonfinite=skip)
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    # Buffers of the unfinished epoch (per-step loss, correct count, batch size), on the device.
    epoch_buffers: dict[str, torch.Tensor] | None = None


@dataclass
class EngineOptions:
    grad_clip_norm: float | None = None
    log_every_n_steps: int = 0  # 0: no per-step points and no per-step sync
    autocast_dtype: torch.dtype | None = None  # bf16/fp16 autocast; None runs in fp32
    checkpoint_every_n_steps: int = 0  # 0: checkpoints at epoch ends only
    skip_nonfinite: int = 0  # >0: skip up to this many non-finite steps (one sync per step)
    log_images: bool = True  # first-layer filters after every epoch
    histogram_every_n_epochs: int = 0  # weight/gradient histograms; 0: off


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _new_buffers(batches) -> dict[str, torch.Tensor]:
    # Batch sizes are known up front (all full but the last), so the hot loop writes only the
    # loss and the correct count; a skipped step sets its size to 0.
    steps, device = len(batches), batches.device
    sizes = torch.full((steps,), float(batches.batch_size), device=device)
    sizes[-1] = batches.num_samples - batches.batch_size * (steps - 1)
    return {
        "loss": torch.zeros(steps, device=device),
        "correct": torch.zeros(steps, device=device, dtype=torch.long),
        "size": sizes,
    }


class _SyncPoint:
    """Host-side reading of the epoch buffers: non-finite check and per-step loss points."""

    def __init__(self, state, writer, progress):
        self.state, self.writer, self.progress = state, writer, progress
        self.logged_upto = state.batch_in_epoch  # buffer slots already written to TensorBoard

    def check(self, buffers, upto: int, write_points: bool) -> None:
        losses = buffers["loss"][:upto].float().cpu()  # the host sync
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = self.state.step - (upto - int(bad[0])) + 1
            raise NonFiniteLoss(
                f"the training loss became {losses[int(bad[0])].item()} at epoch "
                f"{self.state.epoch + 1}, step {step}; the run stopped without saving these "
                "weights, so checkpoints/last.pt and best.pt still hold the last good state. "
                "Lower optimizer.lr, set trainer.grad_clip_norm, or use trainer.nonfinite_skips=N "
                "to skip up to N bad steps."
            )
        sizes = buffers["size"][:upto].cpu()
        seen = sizes.sum().item()
        if seen:
            correct = buffers["correct"][:upto].sum().item()
            loss = (losses * sizes).sum().item()
            self.progress.show(loss=loss / seen, acc=correct / seen)
        new = slice(self.logged_upto, upto)
        if write_points and sizes[new].sum() > 0:
            # One point per sync point: the mean loss of the steps since the last one (a point
            # per step cost ~45 us of host time each, 2-4% of a small model's step).
            mean = (losses[new] * sizes[new]).sum() / sizes[new].sum()
            self.writer.add_scalar("train/loss_step", mean.item(), self.state.step)
            self.logged_upto = upto


def _skip_if_nonfinite(loss, optimizer, state, options) -> bool:
    """trainer.nonfinite_skips mode: drop a non-finite step (costs one sync per step)."""
    if not options.skip_nonfinite or torch.isfinite(loss).item():
        return False
    optimizer.zero_grad(set_to_none=True)
    state.skipped_steps += 1
    log.warning(
        "non-finite loss at step %d skipped (%d so far)", state.step + 1, state.skipped_steps
    )
    if state.skipped_steps > options.skip_nonfinite:
        raise NonFiniteLoss(
            f"more than trainer.nonfinite_skips={options.skip_nonfinite} non-finite steps "
            f"(at epoch {state.epoch + 1}, step {state.step + 1}); the last good state is in "
            "checkpoints/last.pt. Lower optimizer.lr or set trainer.grad_clip_norm."
        )
    return True


def train_one_epoch(model, batches, optimizer, loss_fn, scaler, state, writer, options,
                    progress, checkpointer, stop) -> dict:  # fmt: skip
    """Train on the rest of epoch `state.epoch`; returns mean loss, accuracy and images/s."""
    model.train()
    if state.epoch_buffers is None:
        state.epoch_buffers = _new_buffers(batches)
    buffers, sync = state.epoch_buffers, _SyncPoint(state, writer, progress)
    every = options.histogram_every_n_epochs
    histogram_index = len(batches) - 1 if every and (state.epoch + 1) % every == 0 else -1
    started, trained = time.perf_counter(), 0
    # Auxiliary heads (GoogLeNet's): the model adds their weighted loss term to the main loss.
    aux_loss = getattr(model, "aux_loss", None)
    for index, (images, labels) in enumerate(
        batches.epoch(state.epoch, state.batch_in_epoch), state.batch_in_epoch
    ):
        with _autocast(batches.device, options.autocast_dtype):
            logits = model(images)
            loss = loss_fn(logits, labels)
            if aux_loss is not None:
                loss = loss + aux_loss(loss_fn, labels)
        if _skip_if_nonfinite(loss, optimizer, state, options):
            buffers["size"][index] = 0  # a skipped step counts in neither loss nor accuracy
        else:
            scaler.scale(loss).backward()
            if options.grad_clip_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            if index == histogram_index:  # the epoch's last gradients, before they are cleared
                log_histograms(writer, model, state.step + 1)
            optimizer.zero_grad(set_to_none=True)
            buffers["loss"][index] = loss.detach()
            buffers["correct"][index] = (logits.argmax(1) == labels).sum()
        state.step += 1
        state.batch_in_epoch = index + 1
        trained += len(labels)
        progress.advance(len(labels))
        every = options.log_every_n_steps
        if every and state.step % every == 0:
            sync.check(buffers, index + 1, write_points=True)
        # No periodic save on the epoch's last batch: the epoch-end save follows validation at
        # the same step, and a last.pt written before validation would let a resume log that
        # step's validation scalars a second time.
        every = options.checkpoint_every_n_steps
        periodic = every and state.step % every == 0 and index + 1 < len(batches)
        if periodic or stop.requested:
            sync.check(buffers, index + 1, write_points=bool(options.log_every_n_steps))
            checkpointer.save(state, is_best=False)
        if stop.requested:
            raise RunInterrupted(stop.requested)
    sync.check(buffers, len(batches), write_points=bool(options.log_every_n_steps))
    elapsed = time.perf_counter() - started
    seen = buffers["size"].sum().item()
    return {
        "loss": (buffers["loss"] * buffers["size"]).sum().item() / max(seen, 1),
        "acc": buffers["correct"].sum().item() / max(seen, 1),
        "images_per_sec": trained / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
    }


@torch.inference_mode()
def evaluate(model, batches, loss_fn, num_classes: int, autocast_dtype=None) -> dict:
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
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
    confusion = confusion.view(num_classes, num_classes).cpu()
    seen = int(confusion.sum())
    return {
        "loss": loss_sum.item() / max(seen, 1),
        "acc": confusion.diagonal().sum().item() / max(seen, 1),
        "confusion": confusion,
    }


def _log_epoch(writer, state, epochs, train_metrics, val_metrics, lr) -> None:
    scalars = {
        "train/loss": train_metrics["loss"],
        "train/acc": train_metrics["acc"],
        "val/loss": val_metrics["loss"],
        "val/acc": val_metrics["acc"],
        "val/acc_best": state.best_val_acc,
        "lr": lr,
        "perf/images_per_sec": train_metrics["images_per_sec"],
    }
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, state.step)
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.4g | %s img/s",
        state.epoch, epochs, train_metrics["loss"], train_metrics["acc"], val_metrics["loss"],
        val_metrics["acc"], lr, f"{train_metrics['images_per_sec']:,.0f}",
    )  # fmt: skip


def fit(model, optimizer, scheduler, batches, loss_fn, scaler, state, epochs, writer,
        checkpointer, options, progress, stop, num_classes) -> TrainState:  # fmt: skip
    """Train from `state` to `epochs`, validating and checkpointing after every epoch.

    `batches` maps "train" and "val" to `Batches`. `stop.requested` (set by a signal handler)
    ends the run after the current step with last.pt written (`RunInterrupted`).
    """
    while state.epoch < epochs:
        lr = optimizer.param_groups[0]["lr"]
        progress.start_epoch(state.epoch + 1, epochs, batches["train"].num_samples)
        train_metrics = train_one_epoch(model, batches["train"], optimizer, loss_fn, scaler,
                                        state, writer, options, progress, checkpointer, stop)  # fmt: skip
        val_metrics = evaluate(model, batches["val"], loss_fn, num_classes, options.autocast_dtype)
        scheduler.step()
        state.epoch, state.batch_in_epoch, state.epoch_buffers = state.epoch + 1, 0, None
        is_best = val_metrics["acc"] > state.best_val_acc
        if is_best:
            state.best_val_acc, state.best_epoch = val_metrics["acc"], state.epoch
        state.history.append({"epoch": state.epoch, "step": state.step, "lr": lr,
                              **{f"train_{k}": v for k, v in train_metrics.items()},
                              "val_loss": val_metrics["loss"], "val_acc": val_metrics["acc"]})  # fmt: skip
        _log_epoch(writer, state, epochs, train_metrics, val_metrics, lr)
        if options.log_images:
            if state.epoch == 1:
                # The first batch as trained, logged with the epoch's other images rather than
                # before the first step (which would wait for PIL's import and the PNG encoding),
                # at this step so that a resume's purge covers it like any other event.
                log_sample_batch(writer, batches["train"], state.step)
            log_filters(writer, model, state.step)
        checkpointer.save(state, is_best=is_best)
        if stop.requested:
            raise RunInterrupted(stop.requested)
    return state
