"""The workers of a study: each asks the study for a trial, trains it as an ordinary
`convbench train` run in the study folder (a process of its own: one torch thread on a CPU when
several run at once, a GPU each where there are several), and tells the study how it ended.

- complete: the run finished; its value is the best epoch's metric (what best.pt holds).
- pruned: the run's pruner stopped it after an epoch (convbench.run.pruning); its folder stays.
- failed: anything else (a value the run refused, a diverged loss, a bug); the study goes on.

A trial whose worker was stopped by a signal stays "running" in the study, its folder holding
last.pt; `convbench resume STUDY_DIR` continues it (`settle`), and retries, with the same
values, one that died before its first checkpoint. No trial is counted twice: a worker asks only
while the study holds fewer than tune.n_trials trials that count, under the study folder's lock,
and names itself in the trial it asks for (host, pid, start time); `settle`, under the same lock,
leaves a trial whose asking process still lives to it, even before its run folder exists.
"""

import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from convbench.engine import duration
from convbench.run.folder import RunFolder, process_alive, process_started, shown_path
from convbench.tune import space
from convbench.tune.study import StudyFolder, StudyRecord

log = logging.getLogger("convbench")

RETRIED = "retried"  # a failed trial's user attribute: it died before its first checkpoint
FOLDER = "folder"  # a trial's user attribute: its run folder, whichever study folder holds it
BASELINE = "baseline"  # a trial's user attribute: it trains the config's own values
WORKER = "worker"  # a trial's user attribute: {"host", "pid", "started"} of the process that asked
QUIET = ["trainer.progress=false", "++hydra.job_logging.handlers.console.level=WARNING"]


@dataclass
class TrialResult:
    number: int
    state: str  # complete | pruned | failed | interrupted
    value: float | None
    epochs: int  # epochs it trained
    seconds: float  # wall time of its process
    folder: Path
    error: str | None = None


@dataclass
class Plan:
    """What the workers do: the study, where its trials go, how each is started."""

    folder: StudyFolder
    record: StudyRecord
    study: object  # optuna.Study
    storage: object  # its optuna storage (user attributes of running trials are set there)
    workers: int
    devices: list[str]  # trainer.device per worker slot; [] leaves the config's
    threads_typed: bool  # the user chose trainer.num_threads: leave it
    continuing: list[int] = field(default_factory=list)  # trials to resume from last.pt
    results: list[TrialResult] = field(default_factory=list)


def counted(study) -> int:
    """Trials that count towards tune.n_trials: all but those retried with the same values."""
    from optuna.trial import TrialState

    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if not (trial.state == TrialState.FAIL and trial.user_attrs.get(RETRIED))
    )


def objective(metrics: dict, record: StudyRecord) -> float | None:
    """A finished trial's value: the best epoch's metric (the epoch best.pt holds)."""
    values = [e[record.metric] for e in metrics.get("history") or [] if record.metric in e]
    values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if record.direction == "maximize" else min(values)


def settle(plan: Plan) -> list[str]:
    """Before the workers start: every trial the study still calls running, whose process is
    gone, is told what its folder says (finished, pruned), queued to continue from its last.pt,
    or failed and retried with the same values when it has no checkpoint. Returns what was done,
    a line a trial. Trials another live process is running are left to it."""
    with plan.folder.asking(plan.record):  # no worker is between asking and naming its trial
        return _settle(plan)


def _settle(plan: Plan) -> list[str]:
    from optuna.trial import TrialState

    said = []
    mine = plan.folder.path.resolve()
    for trial in plan.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run = RunFolder(plan.folder.trial_dir(trial.number))
        if Path(trial.user_attrs.get(FOLDER, run.path.resolve())).parent != mine:
            said.append(
                f"trial {trial.number}: runs in another study folder "
                f"({trial.user_attrs.get(FOLDER)}); its own resume settles it"
            )
            continue
        if _asker_lives(trial.user_attrs.get(WORKER)):  # its run may not have started yet
            said.append(f"trial {trial.number}: its study process still runs it, left to it")
            continue
        state = run.state() if run.path.is_dir() else "unknown"
        if state == "running":  # its process lives (here, or on another machine)
            said.append(f"trial {trial.number}: still running elsewhere, left to its worker")
            continue
        if state == "finished":
            _tell(plan, trial.number, _result_of(plan, trial.number, 0.0))
            said.append(f"trial {trial.number}: had finished; its result is now in the study")
        elif state == "pruned":
            _tell(plan, trial.number, _result_of(plan, trial.number, 0.0))
            said.append(f"trial {trial.number}: had been pruned; now recorded so")
        elif run.last.is_file():
            plan.continuing.append(trial.number)
            epoch = (run.status() or {}).get("epoch", "?")
            said.append(
                f"trial {trial.number}: continues from its checkpoint (after epoch {epoch})"
            )
        else:
            _set_attr(
                plan, trial.number, key=RETRIED, value=True
            )  # before tell: a told trial is closed
            plan.study.tell(trial.number, state=TrialState.FAIL)
            plan.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            said.append(
                f"trial {trial.number}: died before its first checkpoint; retried as a new "
                "trial with the same values"
            )
    return said


def run_workers(plan: Plan, *, cwd: Path) -> bool:
    """Run trials with `plan.workers` workers until the study holds tune.n_trials of them;
    returns False when a signal stopped the study (its running trials continue on resume)."""
    stop = threading.Event()
    children: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def forward(number, _frame) -> None:
        stop.set()
        with lock:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(number)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = [
            threading.Thread(
                target=_work,
                args=(plan, slot),
                kwargs=dict(stop=stop, children=children, lock=lock, cwd=cwd),
                name=f"worker-{slot}",
            )
            for slot in range(plan.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # the main thread stays free to take signals
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return not stop.is_set()


def _work(plan: Plan, slot: int, *, stop, children, lock, cwd: Path) -> None:
    while not stop.is_set():
        with lock:
            number = plan.continuing.pop(0) if plan.continuing else None
        resume = number is not None
        if not resume:
            number = _ask(plan, lock)
            if number is None:
                return
        command = _command(plan, number, slot=slot, resume=resume)
        started = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        with lock:
            children.add(child)
        output, _ = child.communicate()
        with lock:
            children.discard(child)
        result = _result_of(plan, number, time.perf_counter() - started)
        if result.state == "failed":
            result.error = result.error or _last_lines(output) or f"exit {child.returncode}"
        _keep_output(result.folder, output)
        with lock:
            if result.state != "interrupted":
                _tell(plan, number, result)
            plan.results.append(result)
            log.info("%s", said_of(result, plan.record))


def _ask(plan: Plan, lock) -> int | None:
    """A new trial's number, or None when the study is complete."""
    with lock, plan.folder.asking(plan.record):
        if counted(plan.study) >= plan.record.n_trials:
            return None
        if plan.record.baseline and not plan.study.get_trials(deepcopy=False):
            # The study's first trial: the config's own values, what the search must beat.
            plan.study.enqueue_trial(plan.record.baseline, user_attrs={BASELINE: True})
        trial = plan.study.ask(space.distributions(plan.record.params))
        trial.set_user_attr(FOLDER, str(plan.folder.trial_dir(trial.number).resolve()))
        trial.set_user_attr(WORKER, _this_process())
        values = " ".join(
            space.as_override(k, _short(v)).replace("'", "") for k, v in trial.params.items()
        )
        own = " (the config's own values)" if trial.user_attrs.get(BASELINE) else ""
        log.info("trial %d%s: %s", trial.number, own, values)
        return trial.number


def _this_process() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_started(pid)}


def _asker_lives(worker) -> bool:
    """Whether the process named by a trial's WORKER attribute still runs, as far as this
    machine can tell: a process on another machine is not known to live (its run folder says),
    and a live process with the same pid but another start time (a pid reused, say after a
    reboot) is not the one."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or not process_alive(pid):
        return False
    started = worker.get("started")
    return started is None or started == process_started(pid)


def _command(plan: Plan, number: int, *, slot: int, resume: bool) -> list[str]:
    folder = plan.folder.trial_dir(number)
    dirs = [arg for path in plan.record.config_dirs for arg in ("--config-dir", path)]
    if resume:
        return [sys.executable, "-m", "convbench", "resume", str(folder), *dirs]
    trial = plan.study.get_trials(deepcopy=False)[number]
    values = [space.as_override(key, value) for key, value in trial.params.items()]
    extra = [] if plan.threads_typed or plan.workers == 1 else ["trainer.num_threads=1"]
    if plan.devices:
        extra.append(f"trainer.device={plan.devices[slot % len(plan.devices)]}")
    study = [
        f"tune.trial={number}",
        f"tune.study_name={plan.record.name}",
        f"tune.storage={plan.folder.storage_url(plan.record)}",
        f"hydra.run.dir={folder}",
    ]
    return [
        *(sys.executable, "-m", "convbench", "train"),
        *dirs,
        *plan.record.overrides,
        *values,
        *extra,
        *study,
        *QUIET,
    ]


def _result_of(plan: Plan, number: int, seconds: float) -> TrialResult:
    run = RunFolder(plan.folder.trial_dir(number))
    status = run.status() or {}
    state = run.state() if run.path.is_dir() else "unknown"
    epochs = status.get("epoch") or 0
    result = TrialResult(number, "failed", None, epochs, seconds, run.path, status.get("error"))
    if state == "finished":
        result.value = objective(run.metrics() or {}, plan.record)
        result.state = "complete" if result.value is not None else "failed"
        result.error = None if result.value is not None else "no finite metric in its history"
    elif state == "pruned":
        result.state, result.error = "pruned", None
    elif state == "interrupted" and run.last.is_file():
        result.state, result.error = "interrupted", None
    return result


def _tell(plan: Plan, number: int, result: TrialResult) -> None:
    from optuna.trial import TrialState

    if result.state == "complete":
        plan.study.tell(number, result.value)
    elif result.state == "pruned":
        plan.study.tell(number, state=TrialState.PRUNED)
    else:
        _set_attr(plan, number, key="error", value=str(result.error)[:500])
        plan.study.tell(number, state=TrialState.FAIL)


def _set_attr(plan: Plan, number: int, *, key: str, value) -> None:
    study_id = plan.storage.get_study_id_from_name(plan.record.name)
    trial_id = plan.storage.get_trial_id_from_study_id_trial_number(study_id, number)
    plan.storage.set_trial_user_attr(trial_id, key, value)


def said_of(result: TrialResult, record: StudyRecord) -> str:
    """A trial's end, in one line."""
    where = shown_path(result.folder)
    took = duration(result.seconds)
    if result.state == "complete":
        return (
            f"trial {result.number} complete: {record.metric} {result.value:.4f} after "
            f"{result.epochs} epochs, {took} ({where})"
        )
    if result.state == "pruned":
        return (
            f"trial {result.number} pruned after epoch {result.epochs} of {record.epochs}, "
            f"{took}: saved about {duration(saved_seconds(result, record))}"
        )
    if result.state == "interrupted":
        return f"trial {result.number} stopped by a signal after epoch {result.epochs}; resume continues it"
    return f"trial {result.number} failed: {' '.join(str(result.error).split())[:200]}"


def saved_seconds(result: TrialResult, record: StudyRecord) -> float:
    """What the epochs a pruned trial did not train would have taken, at the pace its run
    logged (train.log's epoch lines; its process's start-up is not an epoch's cost)."""
    if result.state != "pruned" or not result.epochs:
        return 0.0
    return epoch_seconds(result) * (record.epochs - result.epochs)


def epoch_seconds(result: TrialResult) -> float:
    """A trial's seconds per epoch, from the timestamps of its train.log: first to last epoch
    line over the epochs between, or with one epoch, from the run's first line (its data
    loaded) to that epoch's; its whole time over its epochs when the log says nothing."""
    stamps, epochs = [], []
    with contextlib.suppress(OSError):
        for line in RunFolder(result.folder).log_file.read_text().splitlines():
            with contextlib.suppress(ValueError):
                stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
                stamps.append(stamp)
                if "] epoch " in line:
                    epochs.append(stamp)
    if len(epochs) >= 2:
        return (epochs[-1] - epochs[0]).total_seconds() / (len(epochs) - 1)
    if epochs:
        return (epochs[0] - stamps[0]).total_seconds()
    return result.seconds / max(result.epochs, 1)


def _keep_output(folder: Path, output: str) -> None:
    """What the trial's process printed (warnings, errors, a bug's traceback) beside its run."""
    if output.strip() and folder.is_dir():
        with contextlib.suppress(OSError):
            (folder / "console.txt").write_text(output)


def _last_lines(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return " ".join(lines[-3:])


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value
