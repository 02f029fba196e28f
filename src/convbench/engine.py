"""The training engine: `train_one_epoch`, `evaluate`, `fit`. Read it top to bottom.

Functions take objects (model, batches, optimizer, writer), never the config. The step order is
fixed: lr -> forward -> loss -> backward -> clip -> step -> zero_grad -> log. The learning rate
changes once per epoch (schedulers count epochs). Running sums stay on the device; the host
waits on the device only at the end of an epoch, or every `log_every_n_steps` steps when a
per-step loss point is asked for.
"""

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger("convbench")


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_val_acc: float = -math.inf
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch


@dataclass
class EngineOptions:
    grad_clip_norm: float | None = None
    log_every_n_steps: int = 0  # 0: no per-step points, no per-step host sync
    autocast_dtype: torch.dtype | None = None  # bf16/fp16 autocast; None runs in fp32


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(model, batches, optimizer, loss_fn, scaler, state, writer, options, progress):
    """One pass over `batches` in training mode; returns mean loss, accuracy and images/s."""
    model.train()
    device = batches.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    started = time.perf_counter()
    for images, labels in batches.epoch(state.epoch):
        with _autocast(device, options.autocast_dtype):
            logits = model(images)
            loss = loss_fn(logits, labels)
        scaler.scale(loss).backward()
        if options.grad_clip_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        loss_sum += loss.detach() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if options.log_every_n_steps and state.step % options.log_every_n_steps == 0:
            writer.add_scalar("train/loss_step", loss.item(), state.step)
        progress.advance(len(labels))
    total_loss, total_correct = loss_sum.item(), correct.item()  # the epoch's one host sync
    elapsed = time.perf_counter() - started
    return {
        "loss": total_loss / max(seen, 1),
        "acc": total_correct / max(seen, 1),
        "images_per_sec": seen / elapsed if elapsed > 0 else 0.0,
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
    writer.flush()
    log.info(
        "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.4g | %s img/s",
        state.epoch,
        epochs,
        train_metrics["loss"],
        train_metrics["acc"],
        val_metrics["loss"],
        val_metrics["acc"],
        lr,
        f"{train_metrics['images_per_sec']:,.0f}",
    )


def fit(
    model,
    optimizer,
    scheduler,
    train_batches,
    val_batches,
    loss_fn,
    scaler,
    state,
    epochs,
    writer,
    checkpointer,
    options,
    progress,
    num_classes,
) -> TrainState:
    """Train from `state.epoch` to `epochs`, validating and checkpointing after every epoch."""
    while state.epoch < epochs:
        lr = optimizer.param_groups[0]["lr"]
        progress.start_epoch(state.epoch + 1, epochs, train_batches.num_samples)
        train_metrics = train_one_epoch(
            model, train_batches, optimizer, loss_fn, scaler, state, writer, options, progress
        )
        val_metrics = evaluate(model, val_batches, loss_fn, num_classes, options.autocast_dtype)
        scheduler.step()
        state.epoch += 1
        is_best = val_metrics["acc"] > state.best_val_acc
        if is_best:
            state.best_val_acc, state.best_epoch = val_metrics["acc"], state.epoch
        state.history.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "lr": lr,
                **{f"train_{k}": v for k, v in train_metrics.items()},
                "val_loss": val_metrics["loss"],
                "val_acc": val_metrics["acc"],
            }
        )
        _log_epoch(writer, state, epochs, train_metrics, val_metrics, lr)
        checkpointer.save(state, is_best=is_best)
    return state
