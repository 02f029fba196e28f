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

import dataclasses
import difflib
import os
import typing
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

from convbench.config.auto import SWITCH_VALUES
from convbench.config.compose import user_error_inside
from convbench.config.schema import MAX_IMAGE_SIDE, Config, check_ranges
from convbench.errors import ConvbenchError
from convbench.run.build import build, build_model, build_scheduler, input_shape, warmup_epochs
from convbench.run.ranks import place

META = torch.device("meta")


def preflight(cfg) -> None:
    try:
        check_ranges(cfg)
    except ValueError as exc:  # a range, or a value that cannot resolve (OmegaConf's are too)
        raise user_error_inside(exc) or ConvbenchError(str(exc)) from None
    _check_known_keys(cfg)
    _check_devices(cfg)
    _check_batch_splits(cfg)
    _check_switches(cfg)
    _check_crop(cfg)
    side = int(cfg.dataset.image_size)
    try:
        model = build_model(cfg, META)
    except ConvbenchError:
        _raise_if_too_small(cfg, side)
        raise
    if not _forward_works(model, input_shape(cfg)):
        _raise_if_too_small(cfg, side)
    _check_memory(cfg, model)
    _check_schedule(cfg)


def _check_known_keys(cfg) -> None:
    """`+key=value` adds a key even where the schema is closed; a key the schema does not know
    would be ignored, so it is refused, with the closest known key."""
    for prefix, schema in _closed_nodes():
        node = OmegaConf.select(cfg, prefix) if prefix else cfg
        known = [item.name for item in dataclasses.fields(schema)]
        for key in node or ():
            if key not in known and not (key == "hydra" and not prefix):  # Hydra's own node
                where = f"{prefix}." if prefix else ""
                close = difflib.get_close_matches(str(key), known, n=1)
                guess = f" Did you mean {where}{close[0]}?" if close else ""
                raise ConvbenchError(
                    f"{where}{key} is not a config key: {prefix or 'the top level'} has no key "
                    f"'{key}', so a value given for it would be ignored.{guess} Keys of "
                    f"{prefix or 'the top level'}: {', '.join(known)}."
                )


def _closed_nodes() -> list[tuple[str, type]]:
    """(dotted prefix, dataclass) of every node of the schema whose keys it fixes."""
    found, pending = [], [("", Config)]
    while pending:
        prefix, schema = pending.pop(0)
        found.append((prefix, schema))
        hints = typing.get_type_hints(schema)
        for item in dataclasses.fields(schema):
            if dataclasses.is_dataclass(hints[item.name]):
                pending.append((f"{prefix}.{item.name}".lstrip("."), hints[item.name]))
    return found


def _check_devices(cfg) -> None:
    """trainer.devices processes, each on a core of its own (CPU) or a GPU of its own."""
    devices = int(cfg.trainer.devices)
    on_gpu = str(cfg.trainer.device) == "cuda" or (
        str(cfg.trainer.device) == "auto" and torch.cuda.is_available()
    )
    available = torch.cuda.device_count() if on_gpu else (os.cpu_count() or 1)
    if devices > available:
        what = "GPUs" if on_gpu else "CPU cores"
        raise ConvbenchError(
            f"trainer.devices={devices} asks for more processes than this machine has {what} "
            f"({available}): each process of a run takes one. Use trainer.devices={available} "
            "or fewer, or torchrun across several machines (docs/scaling.md)."
        )


def _check_crop(cfg) -> None:
    """A random crop pads by crop_padding pixels on every side; from the image's own side on,
    an image can be cropped to background only."""
    padding, side = int(cfg.dataset.augment.crop_padding), int(cfg.dataset.native_size)
    if padding >= side:
        raise ConvbenchError(
            f"dataset.augment.crop_padding={padding} is not below the images' side "
            f"(dataset.native_size={side}): a crop could then hold background only. Use a "
            f"value below {side} (a few pixels is usual: 1 for Fashion-MNIST, 4 for CIFAR-10)."
        )


# Bytes per parameter a training step holds: the weights, their gradients and up to two
# optimizer buffers (Adam's moments; SGD's momentum takes one), in fp32.
BYTES_PER_PARAMETER = 4 * 4


def _check_memory(cfg, model) -> None:
    """The model's weights, gradients and optimizer state must fit where it trains (the
    activations come on top; they are not counted)."""
    parameters = sum(p.numel() for p in model.parameters())
    needed = parameters * BYTES_PER_PARAMETER
    available, where = available_memory(str(cfg.trainer.device))
    if available is None or needed <= available:
        return
    raise ConvbenchError(
        f"{cfg.model._target_.rsplit('.', 1)[-1]} has {parameters:,} parameters at "
        f"dataset.image_size={cfg.dataset.image_size}: its weights, gradients and optimizer "
        f"state need about {needed / 1e9:.1f} GB, and {where} has {available / 1e9:.1f} GB "
        "available. Use a smaller dataset.image_size (a dense first layer grows with its "
        "square), narrower layers (model.hidden, model.width_multiplier), or a conv net."
    )


def available_memory(device: str) -> tuple[int | None, str]:
    """(bytes free, where) on the device a run of trainer.device=`device` trains on."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        free, _ = torch.cuda.mem_get_info()
        return free, "the GPU"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "this machine"
    except (OSError, ValueError, IndexError):
        pass
    return None, "this machine"


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


SCHEDULE_CHECKED = 10_000  # epochs the schedule is stepped through (a second or so)


def _check_schedule(cfg) -> None:
    """Step the optimizer's schedule through the run's epochs (the first SCHEDULE_CHECKED) on a
    one-number parameter."""
    warmup, epochs = warmup_epochs(cfg.scheduler), int(cfg.trainer.epochs)
    # A trainer.steps budget comes to its epochs on the data (checked then: run.build.epochs_of).
    if warmup >= epochs and cfg.trainer.steps is None:
        raise ConvbenchError(
            f"scheduler.warmup_epochs={warmup} leaves none of the trainer.epochs={epochs} epochs "
            "to the schedule after the warm-up. Give scheduler.warmup_epochs a value below "
            f"{epochs} (0 turns the warm-up off), or train more epochs."
        )
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = build("optimizer", cfg.optimizer, params=[parameter])
    lr = optimizer.param_groups[0]["lr"]
    if not isinstance(lr, float | int) or lr != lr or lr < 0:
        raise ConvbenchError(
            f"optimizer.lr={lr} is not a learning rate: it must be a number >= 0 (e.g. "
            "optimizer.lr=0.05)."
        )
    scheduler = build_scheduler(cfg.scheduler, optimizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for epoch in range(1, min(epochs, SCHEDULE_CHECKED) + 1):
                scheduler.step()
                _check_learning_rate(cfg, optimizer.param_groups[0]["lr"], epoch)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ConvbenchError(
            f"scheduler: {cfg.scheduler._target_} fails when stepped through "
            f"{cfg.trainer.epochs} epochs ({type(exc).__name__}: {exc}). Check the scheduler.* "
            "values; `convbench train --cfg job` prints them."
        ) from None
