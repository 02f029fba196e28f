"""A run's life: start (or resume), fit, test once on the best checkpoint (and, with a
`robustness` block, under each listed perturbation), write metrics.json.

status.json stays true whatever happens: "running" while it trains, then "finished", "failed"
(with the error) or "interrupted" (a stop signal; resumable). The folder's layout is
convbench.run.folder's; the objects come from convbench.run.build; the loop is convbench.engine.
Rank 0 alone writes the run folder in a distributed run (convbench.run.ranks).
"""

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from convbench.config import schema
from convbench.config.compose import user_error_inside
from convbench.config.trust import Trust, check_config
from convbench.engine import RunIO, TrainState, duration, evaluate, fit
from convbench.errors import (
    CheckpointError,
    ConvbenchError,
    Diverged,
    RunInterrupted,
    TrialPruned,
    WriteFailed,
)
from convbench.files import remove_leftovers, write_failed
from convbench.monitor.console import make_progress, status
from convbench.monitor.pictures import log_confusion, log_graph
from convbench.run import robustness
from convbench.run.build import (
    Run,
    build_model,
    build_run,
    hparams,
    plain_config,
    resolve_device,
)
from convbench.run.checkpoint import Settled, identity_differences, load_checkpoint
from convbench.run.folder import RunFolder, shown_path
from convbench.run.pruning import flat_params, trial_reporter
from convbench.run.ranks import place
from convbench.run.signals import StopRequest

log = logging.getLogger("convbench")


def _writes_the_folder() -> bool:
    return place().is_main


def _lock(folder: RunFolder):
    return folder.lock() if _writes_the_folder() else contextlib.nullcontext()


def _status(folder: RunFolder, status: str, **details) -> None:
    if _writes_the_folder():
        folder.write_status(status, **details)


def _record(folder: RunFolder, status: str, **details) -> None:
    if _writes_the_folder():
        folder.record_status(status, **details)


def train(cfg: DictConfig, folder: RunFolder) -> dict:
    """Train, validate every epoch, test once with the best weights; returns the final metrics.

    The process holds the run folder's lock (RunFolder.lock) throughout.
    """
    composed, cfg = cfg, plain_config(cfg)
    with _lock(folder):
        _status(folder, "running", epochs=cfg.trainer.epochs)
        try:
            with StopRequest(at_once=True):  # decoding a dataset can take minutes
                run = build_run(cfg, folder, composed=composed)
                if cfg.trainer.init_from:
                    init_weights_from(run, cfg.trainer.init_from)
        except RunInterrupted as stop:
            error = f"{stop.signal_name} before the first step: nothing to resume"
            _record(folder, "interrupted", epochs=cfg.trainer.epochs, error=error)
            log.warning("stopped by %s before the first step; nothing was saved", stop.signal_name)
            raise
        except BaseException as exc:
            _record(folder, "failed", epochs=cfg.trainer.epochs, error=str(exc))
            raise
        return execute(run, TrainState())


def init_weights_from(run: Run, path: str) -> None:
    """trainer.init_from: start from another run's weights (fresh optimizer and schedule)."""
    payload = load_checkpoint(Path(path))
    try:
        run.model.load_state_dict(payload["model"])
    except RuntimeError:
        diffs = identity_differences(payload, run.checkpointer.config)
        raise CheckpointError(
            f"{path} holds weights of another model, so trainer.init_from cannot use them. "
            f"Its config differs from this run's in: {'; '.join(diffs) or 'the layer shapes'}. "
            "Use a checkpoint of the same model and dataset shape, or drop trainer.init_from."
        ) from None
    log.info("initialized the model from %s", path)


def read_checkpoint(folder: RunFolder, which: str, trust: Trust) -> dict:
    """The run's checkpoint (`which`: "last" or "best"), checked before anything uses it: its
    config may name only code that `trust` allows (convbench.config.trust), and the run's
    .hydra/config.yaml, when there is one, must describe the same model."""
    path = folder.checkpoint(which)
    payload = load_checkpoint(path)
    check_config(payload.get("config"), trust, str(path))
    check_belongs_to_run(folder, payload)
    return payload


@dataclass
class Trained:
    """A run's trained model, read back from one of its checkpoints: what `eval`, `predict`
    and `export` start from."""

    path: Path  # the checkpoint
    payload: dict
    cfg: DictConfig
    settled: Settled
    model: torch.nn.Module  # with the checkpoint's weights, in eval mode
    device: torch.device


def device_named(name: str, *, run_device: str) -> torch.device:
    """`--device NAME` of the commands that read a run: `run` is the device the run trained on
    (`run_device`) when this machine has it, else the best one here; any other name must be
    here."""
    if name == "run":
        try:
            return resolve_device(run_device)
        except ConvbenchError:
            return resolve_device("auto")
    try:
        return resolve_device(name)
    except ConvbenchError:
        raise ConvbenchError(
            f"--device {name}: this machine has no {name} device that torch can use. Use "
            "--device auto (the best available) or --device cpu."
        ) from None


def load_trained(folder: RunFolder, which: str, trust: Trust, *, device_name: str) -> Trained:
    """The model of checkpoint `which` ("best" or "last"), checked as `read_checkpoint` checks
    it before anything is built, with its weights, on `device_named(device_name)`."""
    payload = read_checkpoint(folder, which, trust)
    path = folder.checkpoint(which)
    cfg = OmegaConf.create(payload["config"])
    settled = Settled.from_dict(payload.get("settled"), path)
    device = device_named(device_name, run_device=str(cfg.trainer.device))
    model = build_model(cfg, device, settled.channels_last)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: its weights do not fit the model its own config builds ({first}). Was "
            "the model's code changed since the run? Use the code it was trained with."
        ) from None
    model.eval()
    return Trained(path, payload, cfg, settled, model, device)


def resume(folder: RunFolder, trust: Trust) -> dict:
    """Continue the run from checkpoints/last.pt, in the same folder, holding its lock. A run
    that already finished is left untouched; its metrics are returned."""
    if not folder.last.is_file():
        raise CheckpointError(
            f"{folder.path} has no {folder.last.relative_to(folder.path)} to resume from"
            + ("" if folder.path.is_dir() else " (the folder does not exist)")
            + ". Pass the folder of a run that saved at least one checkpoint (see `convbench runs`)."
        )
    with _lock(folder):
        payload = read_checkpoint(folder, "last", trust)
        if folder.is_finished():  # finished while this process waited for the lock
            return folder.metrics()
        if _writes_the_folder():
            remove_leftovers(folder.checkpoints)  # an interrupted save; last.pt itself is intact
        cfg = OmegaConf.create(payload["config"])
        started = Settled.from_dict(payload.get("settled"), folder.last)
        step = payload["state"]["step"]
        try:
            with StopRequest(at_once=True):  # loading the data again can take minutes
                run = build_run(cfg, folder, started=started, purge_step=step + 1)
                state = run.checkpointer.restore(payload, TrainState)
        except RunInterrupted as stop:  # last.pt, untouched, is still where to resume from
            stop.saved, stop.run_dir = True, shown_path(folder.path)
            raise
        log.info("resuming %s at epoch %d, step %d", folder.path, state.epoch + 1, state.step)
        return execute(run, state)


def check_belongs_to_run(folder: RunFolder, payload: dict) -> None:
    """Refuse a checkpoint that belongs to another run (copied in from elsewhere), and a run
    folder whose .hydra/config.yaml cannot be read or names another model than its checkpoint."""

    if not folder.config_file.is_file():
        return
    schema.register()  # the resolvers the saved config may use (${minus:...})
    try:
        run_config = OmegaConf.to_container(OmegaConf.load(folder.config_file), resolve=True)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as exc:
        inner = user_error_inside(exc)
        if inner is not None:  # the run's data is gone or moved (a folder dataset's classes)
            raise inner from None
        reason = " ".join(str(exc).split())
        raise CheckpointError(
            f"{folder.config_file} cannot be read as a config ({reason}), so nothing says which "
            f"run {folder.path}'s checkpoints belong to. Nothing was run or written."
        ) from None
    diffs = identity_differences(payload, run_config)
    if diffs:
        raise CheckpointError(
            f"{folder.checkpoints}'s checkpoint was not written by this run: its config differs "
            f"from the run's .hydra/config.yaml in {'; '.join(diffs)}. Resume the run the "
            "checkpoint came from, or start a new run with trainer.init_from=<checkpoint>."
        )


def execute(run: Run, state: TrainState) -> dict:
    """Fit from `state`, then test; keeps status.json true whatever happens."""
    started = time.perf_counter() - sum(e["train_seconds"] for e in state.history)
    epochs, main = run.settled.epochs, run.group.place.is_main
    _status(run.folder, "running", state=state, epochs=epochs)
    if state.step == 0 and run.cfg.trainer.log_graph:
        log_graph(run.writer, run.model, run.batches["train"])
    progress = make_progress(run.cfg.trainer.progress if main else False)
    try:
        with StopRequest() as stop:
            io = RunIO(
                writer=run.writer,
                progress=progress,
                checkpointer=run.checkpointer,
                stop=stop,
                group=run.group,
                after_epoch=trial_reporter(run.cfg) if main else None,
            )
            try:
                fit(
                    run.model_for_training(),
                    run.batches,
                    run.optimization,
                    state=state,
                    epochs=epochs,
                    num_classes=run.cfg.dataset.num_classes,
                    options=run.options,
                    io=io,
                )
            finally:
                progress.stop()
            if not main:  # rank 0 tests the best weights and writes the results
                return {}
            # A stop signal from here on lets the final test finish: the run then has finished.
            try:
                metrics = finish(run, state, time.perf_counter() - started)
            except RuntimeError:
                # A stop signal sent to the whole process group also ends the processes that
                # read a streamed dataset; the test they fed cannot finish, and the run stops
                # as interrupted: `resume` tests best.pt again.
                if stop.requested is None:
                    raise
                raise RunInterrupted(stop.requested) from None
            if stop.requested:
                log.warning("%s came during the final test; the run finished", stop.requested)
            return metrics
    except TrialPruned as pruned:
        _record(run.folder, "pruned", state=state, epochs=epochs, error=str(pruned))
        log.info("the study's pruner stopped this trial: %s", pruned)
        raise
    except RunInterrupted as stop:
        stop.saved = stop.saved or run.checkpointer.saved()  # a second signal saves nothing new
        _record(run.folder, "interrupted", state=state, epochs=epochs, error=stop.signal_name)
        stop.run_dir = shown_path(run.folder.path)  # the resume hint (convbench.cli) names it
        log.warning(
            "stopped by %s at epoch %d, step %d", stop.signal_name, state.epoch + 1, state.step
        )
        raise
    except BaseException as exc:
        _record(run.folder, "failed", state=state, epochs=epochs, error=str(exc))
        raise
    finally:
        with contextlib.suppress(WriteFailed):  # reported already, if it matters
            run.writer.flush()


def finish(run: Run, state: TrainState, wall_time_s: float) -> dict:
    """Test once with the best weights, write metrics.json and HParams, report."""
    run.model.load_state_dict(load_checkpoint(run.checkpointer.best)["model"])
    with status(f"testing best.pt on {run.batches['test'].num_samples:,} images"):
        test = evaluate(
            run.model,
            run.batches["test"],
            run.optimization.loss_fn,
            num_classes=run.cfg.dataset.num_classes,
            autocast_dtype=run.options.autocast_dtype,
        )
    if not math.isfinite(test["loss"]):
        raise Diverged(
            f"the test loss of {run.checkpointer.best} is NaN or infinite: the run diverged, and "
            "it is not reported as finished. Lower optimizer.lr, check the optimizer.* values, "
            "or set trainer.grad_clip_norm."
        )
    metrics = final_metrics(state, test, run=run, wall_time_s=wall_time_s)
    rows = robustness.measure(run)
    if rows:
        metrics["robustness"] = robustness.by_kind(rows)
        robustness.log_rows(run.writer, rows)
    if run.cfg.trainer.log_images:
        classes = list(run.cfg.dataset.classes)
        log_confusion(run.writer, test["confusion"], classes=classes, step=state.step)
    try:
        run.folder.write_metrics(metrics)
    except OSError as exc:
        kept = "The checkpoints are intact, and a resume tests best.pt again and writes the file."
        raise write_failed("the final metrics", run.folder.metrics_file, exc, kept=kept) from None
    final = {"hparam/test_acc": metrics["test_acc"], "hparam/best_val_acc": metrics["best_val_acc"]}
    swept = swept_keys(run.folder)
    name = run.folder.model_name(OmegaConf.to_container(run.cfg.model))
    typed = typed_keys(run.folder, swept)
    settings = hparams(run.cfg, run.settled, name=name, typed=typed, choices=run.folder.choices())
    run.writer.add_hparams(settings, final, lead=[*swept, "seed", "model"])
    run.writer.close()
    run.folder.write_status("finished", state=state, epochs=run.settled.epochs)
    short = result_line(metrics, run.folder, short=True)
    log.info("%s", result_line(metrics, run.folder), extra={"short": short})
    return metrics


def result_line(metrics: dict, folder: RunFolder, *, short: bool = False) -> str:
    """The one line a finished run ends with (also under `-q`); `short`: for a narrow terminal,
    without the speed, and the run folder on a line of its own, never broken."""
    result = (
        f"done: test acc {metrics['test_acc']:.4f} | best val acc {metrics['best_val_acc']:.4f} "
        f"(epoch {metrics['best_epoch']}) | {duration(metrics['wall_time_s'])}"
    )
    if short:
        return f"{result}\n  {shown_path(folder.path)}"
    speed = f"{metrics['train_images_per_sec']:,.0f} img/s"
    return f"{result} | {speed} | {shown_path(folder.path)}"


def final_metrics(state: TrainState, test: dict, *, run: Run, wall_time_s: float) -> dict:
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
        "stopped_early": state.stopped_early,
        "train_images_per_sec": train_images / train_seconds if train_seconds else 0.0,
        "params": run.params,
        "macs": run.macs,
        "settled": run.settled.as_dict(),
        "wall_time_s": wall_time_s,
        "model": run.cfg.model._target_,
        "dataset": run.cfg.dataset.name,
        "device": str(run.device),
        "history": state.history,
    } | trial_record(run.cfg)


def trial_record(cfg) -> dict:
    """{"tune": the study, the trial's number and the values it was given} for a study's
    trial, {} for any other run."""
    tune = cfg.get("tune")
    if tune is None or tune.trial is None:
        return {}
    searched = flat_params(OmegaConf.to_container(tune.params))
    params = {key: OmegaConf.select(cfg, key) for key in searched}
    return {"tune": {"study": tune.study_name, "trial": tune.trial, "params": params}}


def swept_keys(folder: RunFolder) -> list[str]:
    """In a sweep's job, the keys its sweep varies (`model=mlp,lenet`, `seed=range(3)`); []
    for a single run or a record that does not parse."""
    try:
        overrides = OverridesParser.create().parse_overrides(folder.sweep_overrides())
    except HydraException:
        return []
    return [o.key_or_group for o in overrides if o.is_sweep_override()]


def typed_keys(folder: RunFolder, swept: list[str]) -> list[str]:
    """The keys typed on the command line, the `swept` ones first, Hydra's own left out."""
    typed = [o.split("=", 1)[0].lstrip("+~") for o in folder.overrides() if "=" in o]
    return [key for key in dict.fromkeys([*swept, *typed]) if not key.startswith("hydra")]
