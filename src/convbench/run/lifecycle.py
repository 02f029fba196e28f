"""A run's life: start (or resume), fit, test once on the best checkpoint (and, with an
`evaluate` block, under each listed perturbation), write metrics.json.

status.json stays true whatever happens: "running" while it trains, then "finished", "failed"
(with the error) or "interrupted" (a stop signal; resumable). The layout of the folder is in
`convbench.run.folder`; the objects come from `convbench.run.build`; the loop is `convbench.engine`.
"""

import contextlib
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from convbench.analysis.retest import KINDS, UNITS, amount_key, by_kind, robustness
from convbench.config.trust import Trust, check_config
from convbench.data import Split
from convbench.engine import RunIO, TrainState, evaluate, fit
from convbench.errors import CheckpointError, RunInterrupted, WriteFailed
from convbench.files import remove_leftovers, write_failed, write_json
from convbench.monitor.console import make_progress
from convbench.monitor.pictures import log_confusion, log_graph
from convbench.run.build import Run, build_run, hparams, plain_config
from convbench.run.checkpoint import identity_differences, load_checkpoint
from convbench.run.folder import METRICS_FILE, RunLock, read_json, record_status, write_status
from convbench.run.ranks import place
from convbench.run.signals import StopRequest

log = logging.getLogger("convbench")


def _writes_the_folder() -> bool:
    """Rank 0 alone writes the run folder in a distributed run (convbench.run.ranks)."""
    return place().is_main


def _lock(run_dir: Path):
    return RunLock(run_dir) if _writes_the_folder() else contextlib.nullcontext()


def _status(run_dir: Path, status: str, **details) -> None:
    if _writes_the_folder():
        write_status(run_dir, status, **details)


def _record(run_dir: Path, status: str, **details) -> None:
    if _writes_the_folder():
        record_status(run_dir, status, **details)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, validate every epoch, test once with the best weights; returns the final metrics.

    The process holds the run folder's lock (convbench.run.folder.RunLock) throughout.
    """
    cfg = plain_config(cfg)
    with _lock(run_dir):
        _status(run_dir, "running", epochs=cfg.trainer.epochs)
        try:
            run = build_run(cfg, run_dir)
            if cfg.trainer.init_from:
                init_weights_from(run, cfg.trainer.init_from)
        except BaseException as exc:
            _record(run_dir, "failed", epochs=cfg.trainer.epochs, error=str(exc))
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


def finished_metrics(run_dir: Path, payload: dict | None = None) -> dict | None:
    """The metrics of a run that finished (its metrics.json, and a last.pt of this run at its
    final epoch), else None. Reads only."""
    payload = payload or load_checkpoint(run_dir / "checkpoints" / "last.pt")
    check_belongs_to_run(run_dir, payload)
    metrics = read_json(run_dir / METRICS_FILE)
    if metrics is None:
        return None
    saved = payload["state"]
    done = saved["epoch"] >= payload["config"]["trainer"]["epochs"] or saved.get("stopped_early")
    return metrics if done else None


def resume(run_dir: Path, trust: Trust) -> dict:
    """Continue the run in `run_dir` from checkpoints/last.pt, in the same folder, holding its
    lock. A run that already finished is left untouched; its metrics are returned. The code the
    checkpoint's config names must pass `trust` (convbench.config.trust) before anything is built."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise CheckpointError(
            f"{run_dir} has no checkpoints/last.pt to resume from"
            + ("" if run_dir.is_dir() else " (the folder does not exist)")
            + ". Pass the folder of a run that saved at least one checkpoint (see `convbench runs`)."
        )
    with _lock(run_dir):
        payload = load_checkpoint(last)
        finished = finished_metrics(run_dir, payload)
        if finished is not None:  # finished while this process waited for the lock
            return finished
        check_config(payload["config"], trust, str(last))
        if _writes_the_folder():
            remove_leftovers(last.parent)  # an interrupted save; last.pt itself is intact
        cfg = OmegaConf.create(payload["config"])
        step = payload["state"]["step"]
        run = build_run(cfg, run_dir, purge_step=step + 1, choices=payload.get("choices"))
        state = run.checkpointer.restore(payload, TrainState)
        log.info("resuming %s at epoch %d, step %d", run_dir, state.epoch + 1, state.step)
        return execute(run, state)


def check_belongs_to_run(run_dir: Path, payload: dict) -> None:
    """Refuse a last.pt that belongs to another run (copied in from elsewhere), and a run folder
    whose .hydra/config.yaml cannot be read or names another model than its checkpoint."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    from convbench.config import schema

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return
    schema.register()  # the resolvers the saved config may use (${minus:...})
    try:
        run_config = OmegaConf.to_container(OmegaConf.load(saved), resolve=True)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as exc:
        reason = " ".join(str(exc).split())
        raise CheckpointError(
            f"{saved} cannot be read as a config ({reason}), so nothing says which run "
            f"{run_dir}'s checkpoints belong to. Nothing was run or written."
        ) from None
    diffs = identity_differences(payload, run_config)
    if diffs:
        raise CheckpointError(
            f"{run_dir}/checkpoints/last.pt was not written by this run: its config differs from "
            f"the run's .hydra/config.yaml in {'; '.join(diffs)}. Resume the run the checkpoint "
            "came from, or start a new run with trainer.init_from=<checkpoint>."
        )


def execute(run: Run, state: TrainState) -> dict:
    """Fit from `state`, then test; keeps status.json true whatever happens."""
    started = time.perf_counter() - sum(e["train_seconds"] for e in state.history)
    epochs, main = run.cfg.trainer.epochs, run.group.place.is_main
    _status(run.run_dir, "running", state=state, epochs=epochs)
    if state.step == 0 and run.cfg.trainer.log_graph:
        log_graph(run.writer, run.model, run.batches["train"])
    progress = make_progress(run.cfg.trainer.progress if main else False)
    try:
        with StopRequest() as stop:
            try:
                io = RunIO(
                    writer=run.writer,
                    progress=progress,
                    checkpointer=run.checkpointer,
                    stop=stop,
                    group=run.group,
                )
                fit(
                    run.model_for_training(),
                    run.batches,
                    run.optimization,
                    state,
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
            metrics = finish(run, state, time.perf_counter() - started)
            if stop.requested:
                log.warning("%s came during the final test; the run finished", stop.requested)
            return metrics
    except RunInterrupted as stop:
        _record(run.run_dir, "interrupted", state=state, epochs=epochs, error=stop.signal_name)
        stop.run_dir = str(run.run_dir)
        log.warning(
            "stopped by %s at epoch %d, step %d; saved %s. Resume with: convbench resume %s",
            *(stop.signal_name, state.epoch + 1, state.step, run.checkpointer.last, run.run_dir),
        )
        raise
    except BaseException as exc:
        _record(run.run_dir, "failed", state=state, epochs=epochs, error=str(exc))
        raise
    finally:
        with contextlib.suppress(WriteFailed):  # reported already, if it matters
            run.writer.flush()


def finish(run: Run, state: TrainState, wall_time_s: float) -> dict:
    """Test once with the best weights, write metrics.json and HParams, report."""
    run.model.load_state_dict(load_checkpoint(run.checkpointer.best)["model"])
    test = evaluate(
        run.model,
        run.batches["test"],
        run.optimization.loss_fn,
        num_classes=run.cfg.dataset.num_classes,
        autocast_dtype=run.options.autocast_dtype,
    )
    metrics = final_metrics(state, test, run, wall_time_s)
    robust = measure_robustness(run)
    if robust:
        metrics["robustness"] = by_kind(robust)
        log_robustness(run.writer, robust)
    if run.cfg.trainer.log_images:
        log_confusion(run.writer, test["confusion"], list(run.cfg.dataset.classes), state.step)
    try:
        write_json(run.run_dir / METRICS_FILE, metrics)
    except OSError as exc:
        kept = "The checkpoints are intact, and a resume tests best.pt again and writes the file."
        raise write_failed("the final metrics", run.run_dir / METRICS_FILE, exc, kept) from None
    final = {"hparam/test_acc": metrics["test_acc"], "hparam/best_val_acc": metrics["best_val_acc"]}
    run.writer.add_hparams(hparams(run.cfg), final, run_name=".")
    run.writer.close()
    write_status(run.run_dir, "finished", state=state, epochs=run.cfg.trainer.epochs)
    log.info(
        "done: test acc %.4f | best val acc %.4f (epoch %d) | %.1f s | %s img/s | %s",
        *(metrics["test_acc"], metrics["best_val_acc"], metrics["best_epoch"]),
        metrics["wall_time_s"],
        f"{metrics['train_images_per_sec']:,.0f}",
        run.run_dir,
    )
    return metrics


def measure_robustness(run: Run) -> list[dict]:
    """The `evaluate` block: the weights in `run.model` tested under each value of each listed
    perturbation, one at a time, exactly as `convbench eval RUN_DIR --shift N` tests them (the
    same code, the same seed); one log line per kind. Nothing listed: nothing done, []."""
    settings = run.cfg.get("evaluate") or {}  # absent from configs saved without the block
    amounts = {kind: list(settings.get(kind) or ()) for kind in KINDS}
    if not any(amounts.values()):
        return []
    test = run.batches["test"]
    split = Split(test.images.cpu(), test.labels.cpu())  # perturbed on the host, seeded there
    seed, rows = settings.get("seed", 0), []
    for kind, values in amounts.items():
        if not values:
            continue
        found = robustness(run.model, run.cfg, split, run.device, {kind: values}, seed)
        accuracies = " | ".join(f"{amount_key(r['value'])} -> {r['test_acc']:.4f}" for r in found)
        log.info("test acc under %s (%s): %s", kind, UNITS[kind], accuracies)
        rows += found
    return rows


def log_robustness(writer, rows: list[dict]) -> None:
    """One TensorBoard curve per kind, `robust/<kind>_acc`, with the amount as the step so that
    TensorBoard draws accuracy against it: pixels for shift, occlude and clutter, and
    round(100 * strength) for illumination (TensorBoard's steps are whole numbers)."""
    for row in rows:
        value = row["value"]
        step = round(100 * value) if row["kind"] == "illumination" else int(value)
        writer.add_scalar(f"robust/{row['kind']}_acc", row["test_acc"], step)


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
        "stopped_early": state.stopped_early,
        "train_images_per_sec": train_images / train_seconds if train_seconds else 0.0,
        "params": run.params,
        "macs": run.macs,
        "precision": run.choices["precision"][0],
        "channels_last": run.choices["channels_last"][0],
        "choices": run.choices,
        "wall_time_s": wall_time_s,
        "model": run.cfg.model._target_,
        "dataset": run.cfg.dataset.name,
        "device": str(run.device),
        "history": state.history,
    }
