"""One training run: build every object from the config (the only place that instantiates),
train, test once on the best checkpoint, write metrics.json.

Run folder (Hydra makes it): .hydra/ (config, overrides), train.log, events.out.tfevents.*,
checkpoints/{last,best}.pt, metrics.json.
"""

import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from convbench.checkpoint import Checkpointer, load_checkpoint
from convbench.console import make_progress
from convbench.data import Batches, load_splits
from convbench.engine import EngineOptions, TrainState, evaluate, fit
from convbench.errors import ConvbenchError

log = logging.getLogger("convbench")

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit choice must be available."""
    name = str(getattr(name, "value", name))
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if not available[name]:
        raise ConvbenchError(
            f"trainer.device={name} was asked for, but this machine has no {name} device that "
            f"torch can use. Use trainer.device=auto (picks the best available) or trainer.device=cpu."
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(group: str, node: DictConfig, **completion):
    """Instantiate `node` (a model, or a partial optimizer/scheduler completed with `completion`)."""
    try:
        built = instantiate(node)
        return built(**completion) if completion else built
    except ConvbenchError:
        raise
    except Exception as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if isinstance(cause, ConvbenchError):
            raise cause from None
        raise ConvbenchError(
            f"{group}: could not build {node.get('_target_')} ({type(cause).__name__}: {cause}). "
            f"Check the {group}.* values; `convbench train --cfg job` prints them."
        ) from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_batches(cfg: DictConfig, splits, device: torch.device) -> dict[str, Batches]:
    data, trainer = cfg.dataset, cfg.trainer
    common = dict(
        device=device,
        mean=list(data.mean),
        std=list(data.std),
        image_size=data.image_size,
        channels_last=trainer.channels_last,
    )
    return {
        "train": Batches(
            splits["train"],
            batch_size=trainer.batch_size,
            shuffle=True,
            augment=data.augment,
            seed=cfg.seed,
            **common,
        ),
        "val": Batches(splits["val"], batch_size=trainer.eval_batch_size, **common),
        "test": Batches(splits["test"], batch_size=trainer.eval_batch_size, **common),
    }


def hparams(cfg: DictConfig) -> dict:
    """Scalar settings for TensorBoard's HParams view (lists shown as text)."""
    flat = {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "dataset": cfg.dataset.name,
        "seed": cfg.seed,
    }
    for group in ("model", "optimizer", "scheduler", "trainer"):
        for key, value in OmegaConf.to_container(
            cfg[group], resolve=True, enum_to_str=True
        ).items():
            if key in ("_target_", "_partial_"):
                continue
            flat[f"{group}.{key}"] = (
                value if isinstance(value, (int, float, str, bool)) else str(value)
            )
    if "_target_" in cfg.optimizer:
        flat["optimizer"] = cfg.optimizer._target_.rsplit(".", 1)[-1]
    return flat


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, validate every epoch, test once with the best weights; returns the final metrics.

    `run_dir` defaults to the folder Hydra made for this job.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir or HydraConfig.get().runtime.output_dir)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.trainer.device)
    splits = load_splits(cfg.dataset)
    batches = make_batches(cfg, splits, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format
    model = build("model", cfg.model).to(device, memory_format=memory_format)
    optimizer = build("optimizer", cfg.optimizer, params=model.parameters())
    scheduler = build("scheduler", cfg.scheduler, optimizer=optimizer)
    precision = str(getattr(cfg.trainer.precision, "value", cfg.trainer.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    options = EngineOptions(
        cfg.trainer.grad_clip_norm, cfg.trainer.log_every_n_steps, AUTOCAST_DTYPES[precision]
    )
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    checkpointer = Checkpointer(
        run_dir / "checkpoints", config, model, optimizer, scheduler, scaler
    )
    train_model = torch.compile(model) if cfg.trainer.compile else model
    loss_fn = nn.CrossEntropyLoss()
    params = count_parameters(model)
    log.info(
        "%s on %s (%s train / %s val / %s test images), %s parameters, device %s -> %s",
        config["model"]["_target_"].rsplit(".", 1)[-1],
        cfg.dataset.name,
        f"{len(splits['train']):,}",
        f"{len(splits['val']):,}",
        f"{len(splits['test']):,}",
        f"{params:,}",
        device,
        run_dir,
    )

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    progress = make_progress()
    try:
        state = fit(
            train_model,
            optimizer,
            scheduler,
            batches["train"],
            batches["val"],
            loss_fn,
            scaler,
            TrainState(),
            cfg.trainer.epochs,
            writer,
            checkpointer,
            options,
            progress,
            cfg.dataset.num_classes,
        )
    finally:
        progress.stop()
    model.load_state_dict(load_checkpoint(checkpointer.best)["model"])
    test = evaluate(
        model, batches["test"], loss_fn, cfg.dataset.num_classes, options.autocast_dtype
    )
    metrics = final_metrics(state, test, params, time.perf_counter() - started, cfg, device)
    write_json(run_dir / "metrics.json", metrics)
    writer.add_hparams(
        hparams(cfg),
        {"hparam/test_acc": metrics["test_acc"], "hparam/best_val_acc": metrics["best_val_acc"]},
        run_name=".",
    )
    writer.close()
    log.info(
        "done: test acc %.4f | best val acc %.4f (epoch %d) | %.1f s | %s img/s | %s",
        metrics["test_acc"],
        metrics["best_val_acc"],
        metrics["best_epoch"],
        metrics["wall_time_s"],
        f"{metrics['train_images_per_sec']:,.0f}",
        run_dir,
    )
    return metrics


def final_metrics(
    state: TrainState, test: dict, params: int, wall_time_s: float, cfg, device
) -> dict:
    train_seconds = sum(epoch["train_seconds"] for epoch in state.history)
    train_images = sum(
        epoch["train_images_per_sec"] * epoch["train_seconds"] for epoch in state.history
    )
    return {
        "status": "finished",
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "steps": state.step,
        "train_images_per_sec": train_images / train_seconds if train_seconds else 0.0,
        "params": params,
        "wall_time_s": wall_time_s,
        "model": cfg.model._target_,
        "dataset": cfg.dataset.name,
        "device": str(device),
        "history": state.history,
    }


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file, then rename), so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
