"""Checks a config passes before a run starts, so a mistake costs seconds, not a run folder.

`preflight(cfg)` raises `ConvbenchError` for:
- a setting out of its range (the limits in convbench.config.schema's schema);
- a model, optimizer or scheduler that rejects its arguments (built for real, the model on
  the meta device: no weights, whatever its size);
- images the model cannot take (it is built, and one meta image goes through it, at
  dataset.image_size; when larger images would pass, the message gives the smallest side that
  does);
- a warm-up as long as the run, or a schedule that fails when stepped through the run's
  epochs (StepLR with step_size=0, say);
- a global batch that does not split evenly over a distributed run's processes.

Called by Hydra (convbench.launch.callback) before a single run's folder is made, and by each
sweep job for its own values.
"""

import warnings

import torch
from omegaconf import OmegaConf

from convbench.config.auto import SWITCH_VALUES
from convbench.config.compose import user_error_inside
from convbench.config.schema import MAX_IMAGE_SIDE, check_ranges
from convbench.errors import ConvbenchError
from convbench.run.build import build, build_model, build_scheduler, input_shape, warmup_epochs
from convbench.run.ranks import place

META = torch.device("meta")


def preflight(cfg) -> None:
    try:
        check_ranges(cfg)
    except ValueError as exc:  # a range, or a value that cannot resolve (OmegaConf's are too)
        raise user_error_inside(exc) or ConvbenchError(str(exc)) from None
    _check_batch_splits(cfg)
    _check_switches(cfg)
    side = int(cfg.dataset.image_size)
    try:
        model = build_model(cfg, META)
    except ConvbenchError:
        _raise_if_too_small(cfg, side)
        raise
    if not _forward_works(model, input_shape(cfg)):
        _raise_if_too_small(cfg, side)
    _check_schedule(cfg)


def _check_switches(cfg) -> None:

    value = str(cfg.trainer.channels_last)
    if value.lower() not in SWITCH_VALUES:
        raise ConvbenchError(
            f"trainer.channels_last={value} is not one of {', '.join(SWITCH_VALUES)} "
            "(auto: channels_last for conv nets on a CPU, and for big ones on a GPU)."
        )
    data = cfg.dataset
    if data.stream and str(data.format) != "folder":
        raise ConvbenchError(
            f"dataset.stream=true reads image files from a folder (dataset=imagefolder), but "
            f"dataset={data.name} is read from its {data.format} files into memory. Leave out "
            "dataset.stream, or train on a folder of images with dataset=imagefolder "
            "dataset.root=PATH."
        )


def _check_batch_splits(cfg) -> None:
    """The global batch must split evenly over a distributed run's processes."""

    here = place()
    processes = here.world_size if here.is_distributed else cfg.trainer.devices
    if cfg.trainer.batch_size % processes:
        raise ConvbenchError(
            f"trainer.batch_size={cfg.trainer.batch_size} does not split over {processes} "
            f"processes: it is the global batch, and each process takes an equal part. Use a "
            f"multiple of {processes}, e.g. trainer.batch_size="
            f"{max(processes, cfg.trainer.batch_size // processes * processes)}."
        )


def _forward_works(model, shape) -> bool:
    model.eval()  # no dropout draws, auxiliary heads off
    try:
        with torch.no_grad():
            model(torch.zeros(shape, device=META))
    except (RuntimeError, TypeError, ValueError):  # shapes that do not fit, sizes of 0
        return False
    return True


def _fits(cfg, side: int) -> bool:
    """Whether the model builds for, and runs on, images of `side` x `side` pixels."""
    resized = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    resized.dataset.image_size = side
    try:
        model = build_model(resized, META)
    except ConvbenchError:
        return False
    return _forward_works(model, input_shape(resized))


def _raise_if_too_small(cfg, side: int) -> None:
    """When larger images would work, say so with the smallest side that does (a binary search
    over sides, each a model built on the meta device)."""
    largest = min(max(4 * side, 64), MAX_IMAGE_SIDE)
    if side >= largest or not _fits(cfg, largest):
        return  # not a matter of size: the caller reports what went wrong
    low, high = side, largest  # fails at low, works at high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _fits(cfg, middle) else (middle, high)
    name = cfg.model._target_.rsplit(".", 1)[-1]
    raise ConvbenchError(
        f"dataset.image_size={side} is too small for {name} with these settings: it needs images "
        f"of at least {high}x{high}. Use dataset.image_size={high} or more (batches are resized "
        "on the device), or less stride, pooling or kernel size in the model."
    )


def _check_learning_rate(cfg, lr: float, epoch: int) -> None:
    if lr != lr or lr < 0:  # NaN or negative: no optimizer step would make sense
        raise ConvbenchError(
            f"scheduler: {cfg.scheduler._target_} sets the learning rate to {lr} after epoch "
            f"{epoch}. Check the scheduler.* values (a negative gamma, say); `convbench train "
            "--cfg job` prints them."
        )


def _check_schedule(cfg) -> None:
    """Step the optimizer's schedule through every epoch of the run on a one-number parameter."""
    warmup, epochs = warmup_epochs(cfg.scheduler), int(cfg.trainer.epochs)
    if warmup >= epochs:
        raise ConvbenchError(
            f"scheduler.warmup_epochs={warmup} leaves none of the trainer.epochs={epochs} epochs "
            "to the schedule after the warm-up. Give scheduler.warmup_epochs a value below "
            f"{epochs} (0 turns the warm-up off), or train more epochs."
        )
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build("optimizer", cfg.optimizer, params=[parameter])
    scheduler = build_scheduler(cfg.scheduler, optimizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for epoch in range(1, cfg.trainer.epochs + 1):
                optimizer.step()
                scheduler.step()
                _check_learning_rate(cfg, optimizer.param_groups[0]["lr"], epoch)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ConvbenchError(
            f"scheduler: {cfg.scheduler._target_} fails when stepped through "
            f"{cfg.trainer.epochs} epochs ({type(exc).__name__}: {exc}). Check the scheduler.* "
            "values; `convbench train --cfg job` prints them."
        ) from None
