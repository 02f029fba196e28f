"""One training run: build every object from the config (the only place that instantiates),
train or resume, test once on the best checkpoint, write metrics.json.

Run folder (Hydra makes it for `train`; `resume` reuses it): .hydra/ (config, overrides),
train.log, status.json, events.out.tfevents.*, checkpoints/{last,best}.pt, metrics.json.
"""

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from convbench.checkpoint import Checkpointer, load_checkpoint
from convbench.console import make_progress
from convbench.data import Batches, load_splits
from convbench.engine import EngineOptions, TrainState, evaluate, fit
from convbench.errors import CheckpointError, ConvbenchError, RunInterrupted
from convbench.signals import StopRequest
from convbench.status import write_json, write_status
from convbench.visuals import log_confusion, log_graph

log = logging.getLogger("convbench")

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit choice must be available."""
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


def eval_batches(cfg: DictConfig, split, device: torch.device) -> Batches:
    """Un-augmented, in-order batches of `split` at the evaluation batch size."""
    data = cfg.dataset
    return Batches(split, batch_size=cfg.trainer.eval_batch_size, device=device,
                   mean=list(data.mean), std=list(data.std), image_size=data.image_size,
                   channels_last=cfg.trainer.channels_last)  # fmt: skip


def make_batches(cfg: DictConfig, splits, device: torch.device) -> dict[str, Batches]:
    data, trainer = cfg.dataset, cfg.trainer
    train = Batches(splits["train"], batch_size=trainer.batch_size, device=device,
                    mean=list(data.mean), std=list(data.std), image_size=data.image_size,
                    channels_last=trainer.channels_last, shuffle=True, augment=data.augment,
                    seed=cfg.seed)  # fmt: skip
    return {
        "train": train,
        "val": eval_batches(cfg, splits["val"], device),
        "test": eval_batches(cfg, splits["test"], device),
    }


def hparams(cfg: DictConfig) -> dict:
    """Scalar settings for TensorBoard's HParams view (lists shown as text)."""
    flat = {"model": cfg.model._target_.rsplit(".", 1)[-1], "dataset": cfg.dataset.name,
            "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1], "seed": cfg.seed}  # fmt: skip
    for group in ("model", "optimizer", "scheduler", "trainer"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if not key.startswith("_"):
                flat[f"{group}.{key}"] = (
                    value if isinstance(value, int | float | str | bool) else str(value)
                )
    return flat


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every leaf that differs between two config dicts."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {old} -> {new}")
    return differences


@dataclass
class Run:
    """Everything a run needs, built once from its config."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    batches: dict[str, Batches]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    options: EngineOptions
    writer: object
    checkpointer: Checkpointer
    params: int

    def model_for_training(self) -> nn.Module:
        """The model, compiled when trainer.compile is set (checkpoints keep the plain one)."""
        return torch.compile(self.model) if self.cfg.trainer.compile else self.model


def build_run(cfg: DictConfig, run_dir: Path, purge_step: int | None = None) -> Run:
    """Data, model, optimizer, scheduler, scaler, writer and checkpointer for `cfg`."""
    from torch.utils.tensorboard import SummaryWriter

    trainer = cfg.trainer
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    seed_everything(cfg.seed)
    device = resolve_device(trainer.device)
    splits = load_splits(cfg.dataset)
    memory_format = torch.channels_last if trainer.channels_last else torch.preserve_format
    model = build("model", cfg.model).to(device, memory_format=memory_format)
    optimizer = build("optimizer", cfg.optimizer, params=model.parameters())
    scheduler = build("scheduler", cfg.scheduler, optimizer=optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=trainer.precision == "fp16")
    options = EngineOptions(trainer.grad_clip_norm, trainer.log_every_n_steps,
                            AUTOCAST_DTYPES[trainer.precision], trainer.checkpoint_every_n_steps,
                            trainer.nonfinite_skips, trainer.log_images,
                            trainer.histogram_every_n_epochs)  # fmt: skip
    # purge_step: on resume, TensorBoard hides events a killed process wrote after last.pt.
    writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(run_dir / "checkpoints", config, model, optimizer, scheduler,
                                scaler, writer)  # fmt: skip
    log.info("%s on %s (%s train / %s val / %s test images), %s parameters, device %s -> %s",
             cfg.model._target_.rsplit(".", 1)[-1], cfg.dataset.name, f"{len(splits['train']):,}",
             f"{len(splits['val']):,}", f"{len(splits['test']):,}",
             f"{count_parameters(model):,}", device, run_dir)  # fmt: skip
    return Run(cfg, run_dir, device, make_batches(cfg, splits, device), model, optimizer,
               scheduler, scaler, options, writer, checkpointer, count_parameters(model))  # fmt: skip


def plain_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as plain values (enums as strings), the same for train and resume."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def init_weights_from(run: Run, path: str) -> None:
    """trainer.init_from: start from another run's weights (fresh optimizer and schedule)."""
    payload = load_checkpoint(Path(path))
    try:
        run.model.load_state_dict(payload["model"])
    except RuntimeError:
        diffs = config_differences(_identity(payload["config"]), _identity(run.checkpointer.config))
        raise CheckpointError(
            f"{path} holds weights of another model, so trainer.init_from cannot use them. "
            f"Its config differs from this run's in: {'; '.join(diffs) or 'the layer shapes'}. "
            "Use a checkpoint of the same model and dataset shape, or drop trainer.init_from."
        ) from None
    log.info("initialized the model from %s", path)


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, validate every epoch, test once with the best weights; returns the final metrics.

    `run_dir` defaults to the folder Hydra made for this job.
    """
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = plain_config(cfg)
    write_status(run_dir, "running", epochs=cfg.trainer.epochs)
    try:
        run = build_run(cfg, run_dir)
        if cfg.trainer.init_from:
            init_weights_from(run, cfg.trainer.init_from)
    except BaseException as exc:
        write_status(run_dir, "failed", epochs=cfg.trainer.epochs, error=str(exc))
        raise
    return execute(run, TrainState())


def execute(run: Run, state: TrainState) -> dict:
    """Fit from `state`, then test; keeps status.json true whatever happens."""
    started = time.perf_counter() - sum(e["train_seconds"] for e in state.history)
    epochs = run.cfg.trainer.epochs
    write_status(run.run_dir, "running", state=state, epochs=epochs)
    if state.step == 0 and run.cfg.trainer.log_graph:
        log_graph(run.writer, run.model, run.batches["train"])
    progress = make_progress(run.cfg.trainer.progress)
    try:
        with StopRequest() as stop:
            fit(run.model_for_training(), run.optimizer, run.scheduler, run.batches,
                nn.CrossEntropyLoss(), run.scaler, state, epochs, run.writer, run.checkpointer,
                run.options, progress, stop, run.cfg.dataset.num_classes)  # fmt: skip
    except RunInterrupted as stop:
        write_status(run.run_dir, "interrupted", state=state, epochs=epochs, error=stop.signal_name)
        stop.run_dir = str(run.run_dir)
        log.warning("stopped by %s at epoch %d, step %d; saved %s. Resume with: convbench resume %s",
                    stop.signal_name, state.epoch + 1, state.step, run.checkpointer.last,
                    run.run_dir)  # fmt: skip
        raise
    except BaseException as exc:
        write_status(run.run_dir, "failed", state=state, epochs=epochs, error=str(exc))
        raise
    finally:
        progress.stop()
        run.writer.flush()
    return finish(run, state, time.perf_counter() - started)


def finish(run: Run, state: TrainState, wall_time_s: float) -> dict:
    """Test once with the best weights, write metrics.json and HParams, report."""
    run.model.load_state_dict(load_checkpoint(run.checkpointer.best)["model"])
    precision = AUTOCAST_DTYPES[run.cfg.trainer.precision]
    test = evaluate(run.model, run.batches["test"], nn.CrossEntropyLoss(),
                    run.cfg.dataset.num_classes, precision)  # fmt: skip
    metrics = final_metrics(state, test, run, wall_time_s)
    if run.cfg.trainer.log_images:
        log_confusion(run.writer, test["confusion"], list(run.cfg.dataset.classes), state.step)
    write_json(run.run_dir / "metrics.json", metrics)
    run.writer.add_hparams(hparams(run.cfg), {"hparam/test_acc": metrics["test_acc"],
                           "hparam/best_val_acc": metrics["best_val_acc"]}, run_name=".")  # fmt: skip
    run.writer.close()
    write_status(run.run_dir, "finished", state=state, epochs=run.cfg.trainer.epochs)
    log.info("done: test acc %.4f | best val acc %.4f (epoch %d) | %.1f s | %s img/s | %s",
             metrics["test_acc"], metrics["best_val_acc"], metrics["best_epoch"],
             metrics["wall_time_s"], f"{metrics['train_images_per_sec']:,.0f}", run.run_dir)  # fmt: skip
    return metrics


def final_metrics(state: TrainState, test: dict, run: Run, wall_time_s: float) -> dict:
    train_seconds = sum(epoch["train_seconds"] for epoch in state.history)
    train_images = sum(e["train_images_per_sec"] * e["train_seconds"] for e in state.history)
    return {
        "status": "finished",
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        "best_val_acc": state.best_val_acc,
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "train_images_per_sec": train_images / train_seconds if train_seconds else 0.0,
        "params": run.params,
        "wall_time_s": wall_time_s,
        "model": run.cfg.model._target_,
        "dataset": run.cfg.dataset.name,
        "device": str(run.device),
        "history": state.history,
    }


def resume(run_dir: Path) -> dict:
    """Continue the run in `run_dir` from checkpoints/last.pt, in the same folder."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise CheckpointError(
            f"{run_dir} has no checkpoints/last.pt to resume from"
            + ("" if run_dir.is_dir() else " (the folder does not exist)")
            + ". Pass the folder of a run that saved at least one checkpoint (see `convbench runs`)."
        )
    for leftover in last.parent.glob(".*.tmp-*"):  # an interrupted save; last.pt is intact
        leftover.unlink()
    payload = load_checkpoint(last)
    check_run_config(run_dir, payload)
    cfg = OmegaConf.create(payload["config"])
    state_step = payload["state"]["step"]
    run = build_run(cfg, run_dir, purge_step=state_step + 1)
    state = run.checkpointer.restore(payload, TrainState)
    if state.epoch >= cfg.trainer.epochs and (run_dir / "metrics.json").is_file():
        raise ConvbenchError(f"{run_dir} already finished all {cfg.trainer.epochs} epochs.")
    log.info("resuming %s at epoch %d, step %d", run_dir, state.epoch + 1, state.step)
    return execute(run, state)


def check_run_config(run_dir: Path, payload: dict) -> None:
    """Refuse a last.pt that belongs to another run (copied in from elsewhere)."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return
    run_config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    diffs = config_differences(_identity(payload["config"]), _identity(run_config))
    if diffs:
        raise CheckpointError(
            f"{run_dir}/checkpoints/last.pt was not written by this run: its config differs from "
            f"the run's .hydra/config.yaml in {'; '.join(diffs)}. Resume the run the checkpoint "
            "came from, or start a new run with trainer.init_from=<checkpoint>."
        )


def _identity(config: dict) -> dict:
    """What makes a checkpoint belong to a model: the model config and the data's shape."""
    dataset = config.get("dataset", {})
    shape_keys = ("name", "num_classes", "in_channels", "image_size")
    return {"model": config.get("model", {}), "dataset": {k: dataset.get(k) for k in shape_keys}}
