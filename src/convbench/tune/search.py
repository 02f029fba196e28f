"""`convbench tune` from its command line to its answer: the study checked and started (or
resumed from its folder), its workers run, and the best trial with the command that trains it
on the full budget."""

import copy
import logging
import secrets
from datetime import datetime
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from convbench.config.compose import compose, config_dir, describe_config_error
from convbench.config.trust import Trust, check_config
from convbench.engine import duration
from convbench.errors import EXIT_INTERRUPTED, ConvbenchError
from convbench.launch.preflight import preflight
from convbench.monitor.console import log_to_run_folder
from convbench.run.folder import RunFolder, read_yaml, shown_path
from convbench.tune import space
from convbench.tune.study import StudyFolder, StudyRecord, new_record, open_study
from convbench.tune.trials import (
    BASELINE,
    RETRIED,
    Plan,
    counted,
    run_workers,
    saved_seconds,
    settle,
)

log = logging.getLogger("convbench")

# A trial's budget: left out of the command that trains the best values on the full one.
BUDGET_KEYS = ("dataset.train_limit", "trainer.epochs")
# Settings of where a run ran, not of what it trained: not carried to that command either.
NOT_CARRIED = (
    *("tune", "hydra", "dataset.root", "dataset.data_dir", "trainer.device", "trainer.progress"),
)
INSTALL = "pip install 'convbench[tune]'"
LOG = "tune.log"  # the study's own lines, in its folder
STATE_WORDS = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def require_optuna() -> None:
    try:
        import optuna
    except ImportError:
        raise ConvbenchError(
            f"`convbench tune` needs Optuna, which is not installed. Install it with: {INSTALL}"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # convbench says what happens


def compose_study(overrides: list[str], config_dirs: list[str]) -> tuple[DictConfig, str]:
    """(the run config the overrides compose, the tune option), checked as `train` checks a
    run, with the search space's every bound tried in it."""
    extra = config_dirs[0] if config_dirs else None
    try:
        cfg = compose(overrides, extra, with_hydra=True)
        option = cfg.hydra.runtime.choices.get("tune")
        with open_dict(cfg):
            cfg.pop("hydra")
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConvbenchError(describe_config_error(exc)) from None
    if cfg.get("tune") is None or option is None:
        options = sorted(p.stem for p in (config_dir() / "tune").glob("*.yaml"))
        raise ConvbenchError(
            "convbench tune needs a search space: tune=NAME, one of "
            f"{', '.join(options)} (conf/tune/), or a file of your own in --config-dir DIR/tune/."
        )
    preflight(cfg)
    if cfg.trainer.devices > 1:
        raise ConvbenchError(
            "a study's trials train on one device each (trainer.devices=1); run several at once "
            "with tune.workers=N instead."
        )
    params = space.read_space(cfg)
    for key, spec in params.items():  # each bound must make a valid run
        ends = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in ends:
            try:
                preflight(with_value(cfg, key, value))
            except (HydraException, OmegaConfBaseException) as exc:
                raise ConvbenchError(
                    f"tune.params.{key}: the value {value!r} makes no valid run: "
                    f"{describe_config_error(exc)}"
                ) from None
            except ConvbenchError as exc:
                raise ConvbenchError(
                    f"tune.params.{key}: the value {value!r} makes no valid run: {exc}"
                ) from None
    return cfg, option


def with_value(cfg: DictConfig, key: str, value) -> DictConfig:
    """A copy of the composed run config with `key` set to `value`: what composing the
    overrides plus `key=value` gives, since every searched key is a leaf of the run config
    (space.check_param) and an override of a leaf is set after the merges, before anything
    resolves. A tenth of a composition's cost, for every bound of the space."""
    trial = copy.deepcopy(cfg)
    OmegaConf.update(trial, key, value, merge=False)
    return trial


def start(overrides: list[str], *, config_dirs: list[str], cwd: Path) -> int:
    """A new study (or one joined through its storage): its exit code."""
    cfg, option = compose_study(overrides, config_dirs)
    require_optuna()
    record = new_record(cfg, option=option, overrides=overrides, config_dirs=config_dirs)
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    path = Path(cfg.tune.dir or f"outputs/tune/{stamp}-{option}-{secrets.token_hex(3)}")
    folder = StudyFolder(path)
    if folder.record_file.is_file():
        raise ConvbenchError(
            f"{path} already holds a study; continue it with `convbench resume {path}`, or "
            "give this one a folder of its own (leave tune.dir out: every study gets a new one)."
        )
    if record.storage:  # opened before anything is written: a bad URL leaves no folder
        from convbench.run.pruning import open_storage

        open_storage(record.storage)
    folder.path.mkdir(parents=True, exist_ok=True)
    study, storage = open_study(folder, record, create=True)
    folder.write(record)
    return drive(folder, record, study=study, storage=storage, cwd=cwd, workers=record.workers)


def resume(
    path: Path, *, cwd: Path, config_dirs: list[str] = (), workers: int | None = None
) -> int:
    """A study continued from its folder: its exit code. The folder's record is input from
    outside: the config folders it names must be given again (`config_dirs`, the user's
    --config-dir), and the config its overrides compose may name only code they vouch for."""
    require_optuna()
    folder = StudyFolder(path)
    record = folder.read()
    check_record(folder, record, config_dirs)
    study, storage = open_study(folder, record, create=False)
    return drive(
        folder, record, study=study, storage=storage, cwd=cwd, workers=workers or record.workers
    )


def check_record(folder: StudyFolder, record: StudyRecord, config_dirs: list[str]) -> None:
    """Refuse a study record that would choose code on its own (convbench.config.trust)."""
    given = {str(Path(d).resolve()) for d in config_dirs}
    missing = [d for d in record.config_dirs if str(Path(d).resolve()) not in given]
    if missing:
        raise ConvbenchError(
            f"{folder.record_file} names the config folder {missing[0]}; a study folder alone "
            f"may not choose code. Pass it again: convbench resume {folder.path} "
            + " ".join(f"--config-dir {d}" for d in record.config_dirs)
        )
    extra = record.config_dirs[0] if record.config_dirs else None
    try:
        cfg = compose([*record.overrides], extra)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConvbenchError(f"{folder.record_file}: {describe_config_error(exc)}") from None
    config = OmegaConf.to_container(cfg, resolve=False)
    check_config(config, Trust.of_folders(record.config_dirs), str(folder.record_file))


def drive(folder: StudyFolder, record: StudyRecord, *, study, storage, cwd, workers) -> int:
    """Run the study's workers to its end, logging to the console and the folder's tune.log."""
    with log_to_run_folder(folder.path / LOG):
        return _drive(folder, record, study=study, storage=storage, cwd=cwd, workers=workers)


def _drive(folder: StudyFolder, record: StudyRecord, *, study, storage, cwd, workers) -> int:
    import torch

    gpus = torch.cuda.device_count()
    plan = Plan(
        folder=folder,
        record=record,
        study=study,
        storage=storage,
        workers=workers,
        devices=[f"cuda:{i}" for i in range(gpus)] if gpus > 1 else [],
        threads_typed=any(o.startswith("trainer.num_threads=") for o in record.overrides),
    )
    where = shown_path(folder.path)
    kept = "SQLite in the folder" if not record.storage else "its storage URL"
    log.info(
        "Study %s: %d trials of %s (%s), %d worker(s), %s sampler, %s pruner",
        record.name,
        record.n_trials,
        record.metric,
        record.direction,
        workers,
        record.sampler,
        record.pruner,
    )
    log.info("study folder: %s (%s)", where, kept)
    for line in settle(plan):
        log.info("%s", line)
    completed = run_workers(plan, cwd=cwd)
    for line in answer(plan):
        log.info("%s", line)
    if not completed:
        log.warning("Interrupted; the running trials saved last.pt. Continue with:")
        log.warning("  convbench resume %s", where)
        return EXIT_INTERRUPTED
    return 0


def answer(plan: Plan) -> list[str]:
    """The end of a study: its trials by state, the time pruning saved, the best trial, the
    command that trains it on the full budget, and the comparison to run next."""
    from optuna.trial import TrialState

    trials = plan.study.get_trials(deepcopy=False)
    states = {}
    for trial in trials:
        state = STATE_WORDS[trial.state.name]
        if trial.state == TrialState.FAIL and trial.user_attrs.get(RETRIED):
            state = "retried with the same values"
        states[state] = states.get(state, 0) + 1
    where = shown_path(plan.folder.path)
    shown = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    lines = [f"Study {where}: {counted(plan.study)} of {plan.record.n_trials} trials ({shown})."]
    pruned = [r for r in plan.results if r.state == "pruned"]
    if pruned:
        saved = sum(saved_seconds(r, plan.record) for r in pruned)
        lines.append(
            f"Pruning saved about {duration(saved)} of training ({len(pruned)} trial(s) stopped "
            "early; the workers share that saving of wall time)."
        )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        lines.append("No trial completed, so there is no best one yet.")
        return lines
    best = plan.study.best_trial
    values = " ".join(space.as_override(k, v) for k, v in best.params.items())
    lines += [
        f"Best: trial {best.number}, {plan.record.metric} {best.value:.4f}: {values}",
        f"  its run: {shown_path(plan.folder.trial_dir(best.number))}",
    ]
    own = next((t for t in complete if t.user_attrs.get(BASELINE)), None)
    if own is not None and own.number == best.number:
        lines.append(f"  No other trial beat the config's own values (trial {own.number}).")
    elif own is not None:
        lines.append(
            f"  The config's own values (trial {own.number}): {plan.record.metric} "
            f"{own.value:.4f}; the best is {best.value - own.value:+.4f} from them."
        )
    lines += [
        "Train it on the full budget (without the study's " + ", ".join(BUDGET_KEYS) + "):",
        f"  convbench train {' '.join(full_budget(plan, best.number))}",
        f"Next: convbench compare {where} --html {where}/report.html",
    ]
    return lines


def full_budget(plan: Plan, number: int) -> list[str]:
    """The overrides that train trial `number`'s config without the study: the config groups
    it was made of, then every value of its config that differs from theirs, but the budget
    (BUDGET_KEYS) and where it ran."""
    run = RunFolder(plan.folder.trial_dir(number))
    choices = (read_yaml(run.hydra_file) or {}).get("hydra", {})
    choices = (choices.get("runtime") or {}).get("choices") or {}
    groups = [
        f"{group}={choices[group]}"
        for group in ("model", "dataset", "optimizer", "scheduler")
        if choices.get(group)
    ]
    extra = plan.record.config_dirs[0] if plan.record.config_dirs else None
    base = _flat(OmegaConf.to_container(compose(groups, extra), resolve=False))
    trial = _flat(read_yaml(run.config_file) or {})
    differing = [
        space.as_override(key, value)
        for key, value in trial.items()
        if base.get(key, object()) != value
        and not key.startswith(NOT_CARRIED)
        and key not in BUDGET_KEYS
        and not (key == "trainer.num_threads" and not plan.threads_typed)
    ]
    return [*groups, *differing]


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        found = {}
        for key, value in node.items():
            found |= _flat(value, f"{prefix}{key}.")
        return found
    return {prefix.rstrip("."): node}
