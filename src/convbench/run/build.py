"""Factories: every object a run needs, made from its config. The only place that instantiates.

`build_run(cfg, folder)` gives a `Run`: device, what the run settled at its start (`Settled`),
batches, model, the optimization objects, the engine options, TensorBoard writer and
checkpointer. `train`, `resume`, `eval`, `summary` and the benchmarks all build through here, so
a config means the same thing everywhere. Nothing here changes the config: what `auto` picks
and the data's statistics go into the `Settled` record beside it.
"""

import dataclasses
import logging
import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from convbench.config.auto import choose_channels_last, choose_precision
from convbench.data.batches import Batches, Splits
from convbench.data.loader import load_splits
from convbench.data.stream import FileSplit, StreamBatches
from convbench.engine import EngineOptions, Optimization
from convbench.errors import ConvbenchError, DatasetError
from convbench.models.anatomy import summarize
from convbench.monitor.console import status
from convbench.monitor.eventlog import EventLog, SilentLog
from convbench.run.checkpoint import Checkpointer, Settled
from convbench.run.folder import RunFolder, shown_path
from convbench.run.ranks import collective, place

log = logging.getLogger("convbench")

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit choice must be available. A
    distributed run's processes on one machine take a GPU each (their LOCAL_RANK)."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    elif not available[name]:
        raise ConvbenchError(
            f"trainer.device={name} was asked for, but this machine has no {name} device that "
            f"torch can use. Use trainer.device=auto (picks the best available) or trainer.device=cpu."
        )
    if name == "cuda":  # a rank's own GPU, or the one chosen for this job (current_device)
        index = local_rank if local_rank else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(group: str, node: DictConfig, **completion):
    """Instantiate `node` (a model, or a partial optimizer/scheduler completed with `completion`).

    A `_target_` that cannot be imported, or arguments its constructor rejects (`TypeError`,
    `ValueError`, as torch's and torchvision's constructors raise), are the user's to fix:
    `ConvbenchError`. Any other exception is a bug, in convbench or in the user's class, and
    propagates with its traceback.
    """
    target = node.get("_target_")
    try:
        built = instantiate(node)
        return built(**completion) if completion else built
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, TypeError | ValueError):
            raise _rejected(group, target, cause) from None
        if cause is None or str(exc).startswith("Error locating target"):
            found = f"{type(cause).__name__}: {cause}" if cause else str(exc).splitlines()[0]
            found = " ".join(found.split())
            raise ConvbenchError(
                f"{group}._target_={target} cannot be used ({found}). Check the name, and that "
                "its package is installed or on PYTHONPATH."
            ) from None
        raise cause from None  # a bug in the constructor: its own traceback shows where
    except (TypeError, ValueError) as exc:  # from a partial's completion (optimizer, scheduler)
        raise _rejected(group, target, exc) from None


def _rejected(group: str, target: str, cause: Exception) -> ConvbenchError:
    reason = " ".join(str(cause).split()).rstrip(".")
    return ConvbenchError(
        f"{group}: {target} rejected its arguments ({type(cause).__name__}: {reason}). "
        f"Check the {group}.* values; `convbench train --cfg job` prints them."
    )


def build_model(cfg: DictConfig, device: torch.device, channels_last: bool = False) -> nn.Module:
    """The config's model on `device` (`torch.device("meta")`: shapes only, no storage)."""
    if device.type == "meta":
        with torch.device("meta"):  # also skips the initializers' arithmetic
            return build("model", cfg.model)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return build("model", cfg.model).to(device, memory_format=memory_format)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(cfg: DictConfig, model: nn.Module | None = None) -> int:
    """Multiply-accumulates per image (convbench.models.anatomy's convention), counted on a copy of
    the model on the meta device: no weights, no arithmetic."""
    model = model or build_model(cfg, torch.device("meta"))
    return summarize(model, input_shape(cfg))["macs"]


def settle(cfg: DictConfig, device: torch.device, *, macs: int, splits: Splits) -> Settled:
    """What this run decides at its start (`Settled`): trainer.precision and
    trainer.channels_last as convbench.config.auto picks them for this device and model, the
    data's statistics and fingerprint. The config itself is left as Hydra composed it."""
    meta_model = build_model(cfg, torch.device("meta"))
    precision = choose_precision(str(cfg.trainer.precision), device, macs)
    layout = choose_channels_last(cfg.trainer.channels_last, meta_model, device=device, macs=macs)
    return Settled(
        precision=precision.value,
        channels_last=layout.value,
        mean=splits.mean,
        std=splits.std,
        fingerprint=splits.fingerprint,
        reasons={"precision": precision.reason, "channels_last": layout.reason},
    )


def check_same_data(cfg: DictConfig, splits: Splits, started: Settled) -> None:
    """A resumed run trains and tests on the data it started on: refuse a dataset whose splits
    changed since (files added to an image folder would otherwise be split anew, and test
    images could move into training)."""
    changed = [
        name for name, value in started.fingerprint.items() if splits.fingerprint.get(name) != value
    ]
    if changed:
        where = cfg.dataset.root or cfg.dataset.data_dir
        raise DatasetError(
            f"the data of {cfg.dataset.name} ({where}) is not the data this run started on: its "
            f"{', '.join(changed)} split(s) changed since (files added, removed or edited). "
            "Resuming would train, validate or test on other images, so it stops here, with "
            "nothing written. Put the data back as it was, or start a new run on the data as "
            "it is now."
        )


def load_splits_in_turn(dataset_cfg: DictConfig, group) -> Splits:
    """`load_splits` on every rank of `group`, rank 0 first: a folder dataset seen for the first
    time is decoded and cached once, by rank 0, and the other ranks read the cache. When rank 0
    fails (a bad file, not enough memory) the other ranks stop too instead of waiting for it."""
    here = group.place
    if not here.is_distributed:
        return load_splits(dataset_cfg)
    splits, failure = None, None
    if here.is_main:
        try:
            splits = load_splits(dataset_cfg)
        except Exception as error:  # re-raised below, after the other ranks have heard of it
            failure = error
    if group.any(failure is not None):  # the other ranks wait here for rank 0
        if failure is not None:
            raise failure
        raise ConvbenchError(
            f"rank 0 could not load the dataset ({dataset_cfg.name}); its error says why."
        )
    return splits if splits is not None else load_splits(dataset_cfg)


def input_shape(cfg: DictConfig) -> tuple[int, int, int, int]:
    """(1, channels, side, side): one image as the model sees it."""
    data = cfg.dataset
    return (1, int(data.in_channels), int(data.image_size), int(data.image_size))


def batches_of(cfg: DictConfig, split, *, device: torch.device, settled: Settled, **settings):
    """`Batches` over an in-memory `Split`, or `StreamBatches` (the same batches, read from disk
    by dataset.num_workers processes) over the `FileSplit` that `load_splits` gives for
    dataset.stream=true, normalized and laid out as the run `settled`. `settings`: the batches'
    own (batch size, shard, shuffle, ...)."""
    common = {
        "device": device,
        "mean": list(settled.mean),
        "std": list(settled.std),
        "image_size": cfg.dataset.image_size,
        "channels_last": settled.channels_last,
    }
    if isinstance(split, FileSplit):
        return StreamBatches(split, num_workers=cfg.dataset.num_workers, **common, **settings)
    return Batches(split, **common, **settings)


def eval_batches(cfg: DictConfig, split, *, device: torch.device, settled: Settled, shard=(0, 1)):
    """Un-augmented, in-order batches of `split` (this rank's `shard`) at the evaluation batch
    size."""
    size = cfg.trainer.eval_batch_size
    return batches_of(cfg, split, device=device, settled=settled, shard=shard, batch_size=size)


def make_batches(cfg: DictConfig, splits: Splits, *, device, settled: Settled, here) -> dict:
    """Training batches (shuffled, augmented) and validation and test batches. In a
    distributed run each rank takes its shard of the training and validation splits, and
    trainer.batch_size is the global batch: each rank's is batch_size / world_size (the
    preflight checks that it divides); the test runs on rank 0 alone, on the whole split.
    With dataset.stream=true (`splits` of files) they are read from disk every epoch."""
    shard = (here.rank, here.world_size)
    train = batches_of(
        cfg,
        splits.train,
        device=device,
        settled=settled,
        batch_size=cfg.trainer.batch_size // here.world_size,
        shard=shard,
        shuffle=True,
        augment=cfg.dataset.augment,
        seed=cfg.seed,
    )
    return {
        "train": train,
        "val": eval_batches(cfg, splits.val, device=device, settled=settled, shard=shard),
        "test": eval_batches(cfg, splits.test, device=device, settled=settled),
    }


def engine_options(cfg: DictConfig, settled: Settled) -> EngineOptions:
    """The trainer settings the engine reads, under their own names, and the loss beyond which
    a run has diverged: 100 x ln(classes), a hundred times an untrained net's loss."""
    trainer = cfg.trainer
    return EngineOptions(
        grad_clip_norm=trainer.grad_clip_norm,
        log_every_n_steps=trainer.log_every_n_steps,
        checkpoint_every_n_steps=trainer.checkpoint_every_n_steps,
        nonfinite_skips=trainer.nonfinite_skips,
        autocast_dtype=AUTOCAST_DTYPES[settled.precision],
        log_images=trainer.log_images,
        histogram_every_n_epochs=trainer.histogram_every_n_epochs,
        early_stop_patience=trainer.early_stop_patience,
        max_loss=100 * math.log(cfg.dataset.num_classes),
        classes=tuple(cfg.dataset.classes or ()),
    )


def epochs_of(cfg: DictConfig, *, steps_per_epoch: int) -> int:
    """The epochs a run trains: trainer.epochs, or as many as a trainer.steps budget needs at
    `steps_per_epoch` (the last epoch whole: a budget is met to within one epoch's steps).
    Refused when the scheduler's warm-up would take all of them."""
    steps = cfg.trainer.steps
    if steps is None:
        return int(cfg.trainer.epochs)
    epochs = math.ceil(steps / max(steps_per_epoch, 1))
    warmup = warmup_epochs(cfg.scheduler)
    if warmup >= epochs:
        raise ConvbenchError(
            f"trainer.steps={steps} comes to {epochs} epoch(s) of {steps_per_epoch} steps, which "
            f"scheduler.warmup_epochs={warmup} would take whole. Give a larger budget or a "
            "shorter warm-up."
        )
    log.info(
        "trainer.steps=%s: %s epochs of %s steps (%s steps)",
        f"{steps:,}",
        f"{epochs:,}",
        f"{steps_per_epoch:,}",
        f"{epochs * steps_per_epoch:,}",
    )
    return epochs


def schedule_node(cfg: DictConfig, epochs: int) -> DictConfig:
    """The scheduler's config with its `${trainer.epochs}` read as the run's `epochs` (the
    same node when they agree), from a config as composed (interpolations kept); the config
    itself is left as Hydra composed it."""
    if epochs == cfg.trainer.epochs:
        return cfg.scheduler
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    copy.trainer.epochs = epochs
    return copy.scheduler


def build_optimization(
    cfg: DictConfig,
    model: nn.Module,
    device: torch.device,
    *,
    epochs: int,
    composed: DictConfig | None = None,
) -> Optimization:
    """Loss (with trainer.label_smoothing), optimizer, scheduler over `epochs` (after
    scheduler.warmup_epochs of linear warm-up; its node read from `composed`, the config as
    Hydra composed it, where given: see `schedule_node`), the fp16 scaler, and the average of
    the weights (trainer.ema)."""
    trainer = cfg.trainer
    optimizer = build("optimizer", cfg.optimizer, params=model.parameters())
    return Optimization(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=trainer.label_smoothing),
        optimizer=optimizer,
        scheduler=build_scheduler(schedule_node(composed or cfg, epochs), optimizer),
        scaler=torch.amp.GradScaler(device.type, enabled=trainer.precision == "fp16"),
        ema=_averaged(model, trainer.ema),
    )


def warmup_epochs(node: DictConfig) -> int:
    """scheduler.warmup_epochs: a convbench key beside the scheduler class's own arguments,
    0 when a scheduler config leaves it out (every shipped one sets it)."""
    value = node.get("warmup_epochs", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConvbenchError(
            f"scheduler.warmup_epochs={value} is out of range: it must be a whole number >= 0 "
            "(the epochs of linear warm-up before the schedule; 0 turns it off)."
        )
    return value


def build_scheduler(node: DictConfig, optimizer):
    """The scheduler's class with the config's arguments, after `warmup_epochs` epochs whose
    learning rate rises linearly to the optimizer's."""
    warmup = warmup_epochs(node)
    settings = OmegaConf.to_container(node, resolve=True)
    settings.pop("warmup_epochs", None)
    main = build("scheduler", OmegaConf.create(settings), optimizer=optimizer)
    if not warmup:
        return main
    rise = torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup
    )
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [rise, main], milestones=[warmup])


def _averaged(model: nn.Module, decay: float):
    """An exponential moving average of `model`'s weights and buffers, or None (decay 0)."""
    if not decay:
        return None

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# What every run logs to TensorBoard's HParams, whatever its model or optimizer, so that the
# parallel-coordinates view, which leaves out runs that lack a column, keeps them all.
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "trainer.epochs",
    "trainer.steps",
    "trainer.batch_size",
    "trainer.label_smoothing",
    "trainer.ema",
    "dataset.image_size",
    "dataset.train_limit",
    "dataset.val_size",
    "dataset.augment.crop_padding",
    "dataset.augment.flip",
    "dataset.augment.occlude",
    "dataset.augment.clutter",
    "dataset.augment.illumination",
)


def hparams(
    cfg: DictConfig,
    settled: Settled,
    *,
    name: str,
    typed: list[str],
    choices: dict[str, str] | None = None,
) -> dict:
    """Settings for TensorBoard's HParams view: the keys typed on the command line first (in a
    sweep's job the swept ones lead: every job has the same list; a config group typed, such
    as `augment`, shows its option from `choices`), then the seed, the model as commands name
    it (`plainnet-56`), the dataset, the optimizer and schedule, what `auto` settled, and
    HPARAM_KEYS. Values are numbers, booleans or text (None as "none", lists as text)."""
    flat: dict = {}
    choices = choices or {}
    for key in typed:
        value = OmegaConf.select(cfg, key, default=None)
        if key in choices and (value is None or isinstance(value, DictConfig)):
            flat[key] = choices[key]
        elif not isinstance(value, DictConfig):
            flat[key] = value
    flat |= {"seed": cfg.seed, "model": name, "dataset": cfg.dataset.name}
    flat["optimizer"] = cfg.optimizer._target_.rsplit(".", 1)[-1]
    flat["scheduler"] = cfg.scheduler._target_.rsplit(".", 1)[-1]
    flat["trainer.precision"] = settled.precision
    flat["trainer.channels_last"] = settled.channels_last
    for key in HPARAM_KEYS:
        flat.setdefault(key, OmegaConf.select(cfg, key, default=None))
    return {key: _hparam(value) for key, value in flat.items()}


def _hparam(value):
    if value is None:
        return "none"
    if isinstance(value, bool | int | float | str):
        return value
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def plain_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as plain values (enums as strings), the same for train and resume."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


@dataclass(kw_only=True)
class Run:
    """Everything a run needs, built once from its config."""

    cfg: DictConfig
    folder: RunFolder
    device: torch.device
    settled: Settled
    batches: dict
    model: nn.Module
    optimization: Optimization
    options: EngineOptions
    writer: (
        object  # convbench.monitor.eventlog.EventLog (SilentLog on a distributed run's other ranks)
    )
    checkpointer: Checkpointer
    params: int
    macs: int
    group: object  # convbench.run.ranks.Solo, or Group in a distributed run

    def model_for_training(self) -> nn.Module:
        """The model, compiled when trainer.compile is set, wrapped in DistributedDataParallel
        in a distributed run (checkpoints keep the plain one)."""
        model = torch.compile(self.model) if self.cfg.trainer.compile else self.model
        if not self.group.place.is_distributed:
            return model

        if self.device.type != "cuda":
            return DistributedDataParallel(model)  # gloo, the run's process group

        nccl = dist.new_group(backend="nccl")  # gradients between GPUs
        return DistributedDataParallel(model, device_ids=[self.device.index], process_group=nccl)


def build_run(
    cfg: DictConfig,
    folder: RunFolder,
    *,
    started: Settled | None = None,
    purge_step: int | None = None,
    composed: DictConfig | None = None,
) -> Run:
    """Data, model, optimization objects, writer and checkpointer for `cfg`, for this process
    (rank 0 alone writes the run folder in a distributed run, see convbench.run.ranks).

    `started`: on resume, what the run's start settled (`Settled`): used as it was, and its
    data fingerprint must match the data found now. `purge_step`: on resume, TensorBoard hides
    events a killed process wrote after last.pt. `composed`: a new run's config as Hydra
    composed it, interpolations and all, whose scheduler is built over the epochs a
    trainer.steps budget comes to (a resumed run restores its scheduler from last.pt).
    """
    trainer, here = cfg.trainer, place()
    group = collective(here)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    seed_everything(cfg.seed)
    device = resolve_device(trainer.device, here.local_rank)
    macs = count_macs(cfg)
    with status(f"loading {cfg.dataset.name}"):
        splits = load_splits_in_turn(cfg.dataset, group)
    if started is not None:
        check_same_data(cfg, splits, started)
    settled = started or settle(cfg, device, macs=macs, splits=splits)
    model = build_model(cfg, device, settled.channels_last)
    if trainer.sync_bn and here.is_distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    batches = make_batches(cfg, splits, device=device, settled=settled, here=here)
    if settled.epochs is None:
        epochs = epochs_of(cfg, steps_per_epoch=len(batches["train"]))
        settled = dataclasses.replace(settled, epochs=epochs)
    optimization = build_optimization(cfg, model, device, epochs=settled.epochs, composed=composed)
    writer = EventLog(folder.path, purge_step=purge_step) if here.is_main else SilentLog()
    checkpointer = Checkpointer(
        folder,
        epochs=settled.epochs,
        config=OmegaConf.to_container(cfg, resolve=True),
        settled=settled,
        model=model,
        optimization=optimization,
        writer=writer,
        group=group,
    )
    params = count_parameters(model)
    sizes = "{train:,} train / {val:,} val / {test:,} test images".format(**splits.sizes())
    # Short lines, the run folder on one of its own: whole on a terminal of 80 columns.
    log.info(
        "%s on %s: %s",
        folder.model_name(OmegaConf.to_container(cfg.model)),
        cfg.dataset.name,
        sizes,
    )
    log.info("%s parameters, %.1f M MACs per image", f"{params:,}", macs / 1e6)
    log.info(
        "device %s, precision %s (%s)", device, settled.precision, settled.reasons["precision"]
    )
    log.info(
        "channels_last %s (%s)",
        str(settled.channels_last).lower(),
        settled.reasons["channels_last"],
    )
    log.info("run folder: %s", shown_path(folder.path))
    return Run(
        cfg=cfg,
        folder=folder,
        device=device,
        settled=settled,
        batches=batches,
        model=model,
        optimization=optimization,
        options=engine_options(cfg, settled),
        writer=writer,
        checkpointer=checkpointer,
        params=params,
        macs=macs,
        group=group,
    )
