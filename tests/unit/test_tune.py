"""`convbench tune` in this process: every mistake in a search space or a storage refused before
any trial starts, as one paragraph, with nothing written; a trial's run reporting to its study
and stopped by the pruner; the pure parts (values as overrides, a trial's value)."""

import fcntl
import math
import os
import socket
import threading

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from convbench.run.folder import process_alive, process_started
from convbench.run.pruning import open_storage
from convbench.tune import space
from convbench.tune.study import StudyFolder, StudyRecord, open_study
from convbench.tune.trials import RETRIED, WORKER, Plan, _ask, _set_attr, objective, settle
from helpers.cli import tiny_mnist_overrides
from helpers.inprocess import convbench

LR = "tune.params.optimizer.lr"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+tune.params.optimizer.nosuch={type:float,low:0,high:1}", "is not a key of the run"),
        (f"{LR}.low=0.5", "is empty (low = high)"),
        (f"{LR}.low=0.9", "low=0.9 is above high=0.5"),
        (f"{LR}.low=0", "a log range must lie above zero"),
        ("tune.params.model.activation.choices=[relu]", "at least two choices"),
        (f"+{LR}.scale=2", "scale is not a field of a float distribution"),
        (f"{LR}.type=normal", "type: float, int or categorical"),
        ("tune.sampler=grid", "tune.params.optimizer.lr is a continuous float range"),
        ("tune.metric=test_acc", "never chooses"),
        ("tune.params.optimizer.momentum.low=0.0", "Nesterov momentum requires a momentum"),
        ("tune.storage=nosuchdb://x/y", "tune.storage=nosuchdb://x/y cannot be opened"),
        ("tune.storage=sqlite:////no/such/folder/s.db", "cannot be opened"),
        ("trainer.steps=100", "trainer.steps=100 cannot budget a study's trials"),
    ],
)
def test_a_bad_search_is_refused_before_any_trial(tmp_path, monkeypatch, override, expected):
    monkeypatch.chdir(tmp_path)
    result = convbench("tune", "tune=lenet_sgd", override)
    assert result.code == 2, result
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, "one paragraph"
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_tune_without_a_search_space_names_the_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = convbench("tune", "model=mlp")
    assert result.code == 2 and "tune=NAME, one of lenet_sgd" in result.stderr


def test_without_optuna_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "optuna", None)  # as if not installed
    result = convbench("tune", "tune=lenet_sgd")
    assert result.code == 2 and "pip install 'convbench[tune]'" in result.stderr, result
    assert list(tmp_path.iterdir()) == []


def test_a_study_of_another_search_space_in_the_same_storage_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    other = optuna.create_study(study_name="lenet_sgd", storage=url, direction="maximize")
    other.set_user_attr("params", {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1.0}})
    other.set_user_attr("metric", "val_acc")
    result = convbench("tune", "tune=lenet_sgd", f"tune.storage={url}", "tune.dir=study")
    assert result.code == 2, result
    assert "searches another space or metric" in result.stderr
    assert len(other.get_trials()) == 0, "no trial was asked"


def test_a_trial_below_the_median_is_pruned_inside_its_run(tmp_path, monkeypatch, mnist_root):
    """Trial 0 reached 0.99 at every epoch; trial 1, running, reports to the same study from
    its run, is worse at epoch 1, and the median pruner stops it: status "pruned", exit 6,
    its folder kept with last.pt, no metrics.json."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    best = study.ask()
    for epoch in (1, 2):
        best.report(0.99, epoch)
    study.tell(best, 0.99)
    running = study.ask()
    run_dir = tmp_path / "trial"
    result = convbench(
        "train",
        "tune=lenet_sgd",
        *tiny_mnist_overrides(mnist_root),
        "trainer.log_images=false",
        "trainer.num_threads=1",
        f"tune.trial={running.number}",
        "tune.study_name=s",
        f"tune.storage={url}",
        "tune.startup_trials=1",
        "tune.warmup_epochs=0",
        f"hydra.run.dir={run_dir}",
    )
    assert result.code == 6, result
    assert "pruned after epoch 1" in result.stderr
    status = OmegaConf.load(run_dir / "status.json")
    assert status.status == "pruned" and status.epoch == 1
    assert (run_dir / "checkpoints" / "last.pt").is_file() and not (
        run_dir / "metrics.json"
    ).exists()
    reported = study.get_trials()[running.number].intermediate_values
    assert list(reported) == [1] and reported[1] < 0.99


def test_a_value_goes_back_to_hydra_as_it_was():
    parser = OverridesParser.create()
    for value in (0.015022325326844811, 1e-06, 3, "relu", "T-shirt/top", True, None, 2.0):
        override = space.as_override("a.b", value)
        parsed = parser.parse_overrides([override])[0].value()
        assert parsed == value and type(parsed) is type(value), override


def test_a_trials_value_is_its_best_epochs_metric():
    history = [{"val_acc": 0.5, "val_loss": 1.2}, {"val_acc": 0.7, "val_loss": 0.9}]
    history.append({"val_acc": 0.6, "val_loss": float("nan")})
    record = StudyRecord(**_record(metric="val_acc", direction="maximize"))
    assert objective({"history": history}, record) == 0.7
    record = StudyRecord(**_record(metric="val_loss", direction="minimize"))
    assert objective({"history": history}, record) == 0.9, "a NaN epoch is not the best"
    assert objective({"history": []}, record) is None
    assert not math.isnan(objective({"history": history[:1]}, record))


def _record(**changes) -> dict:
    fields = dict(
        name="s",
        option="lenet_sgd",
        overrides=[],
        config_dirs=[],
        storage="",
        params={},
        metric="val_acc",
        direction="maximize",
        n_trials=1,
        sampler="tpe",
        pruner="median",
        startup_trials=1,
        warmup_epochs=0,
        epochs=2,
        seed=0,
    )
    return fields | changes


def test_the_configs_own_values_are_a_trial_only_inside_the_space():
    params = {
        "optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True},
        "trainer.batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
        "model.activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    }
    cfg = OmegaConf.create(
        {"optimizer": {"lr": 0.05}, "trainer": {"batch_size": 128}, "model": {"activation": "relu"}}
    )
    assert space.own_values(cfg, params) == {
        "optimizer.lr": 0.05,
        "trainer.batch_size": 128,
        "model.activation": "relu",
    }
    for key, outside in (
        ("optimizer.lr", 0.9),  # above high
        ("trainer.batch_size", 100),  # off the step
        ("model.activation", "gelu"),  # not a choice
    ):
        changed = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={outside}"]))
        assert space.own_values(changed, params) == {}, key


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"overrides": ["model._target_=builtins.open"]}, "builtins.open"),
        ({"config_dirs": ["/somewhere/conf"]}, "--config-dir /somewhere/conf"),
    ],
)
def test_a_study_folder_alone_may_not_choose_code(tmp_path, changes, expected):
    folder = StudyFolder(tmp_path / "study")
    folder.write(StudyRecord(**_record(**changes)))
    result = convbench("resume", str(folder.path), cwd=tmp_path)
    assert result.code == 2, result
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not folder.database.exists() and not list(folder.path.glob("trial-*")), "nothing ran"


def test_workers_opening_a_new_database_together_all_get_it(tmp_path):
    """Workers of one study that start at once race to create the database's tables; the
    loser must retry, not report the URL as unusable."""
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'shared{round_}.db'}"
        barrier, errors = threading.Barrier(4), []

        def open_it(url=url, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                open_storage(url).get_all_studies()
            except Exception as exc:  # any failure is reported below
                errors.append(str(exc)[:200])

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_a_worker_that_finds_the_study_created_meanwhile_joins_it(tmp_path, monkeypatch):
    """Two workers both miss the study and both create it: the second joins the first's."""
    params = {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}
    record = StudyRecord(**_record(params=params))
    folder = StudyFolder(tmp_path / "study")
    folder.path.mkdir()
    first, _ = open_study(folder, record, create=True)
    first.enqueue_trial({"optimizer.lr": 0.01})
    real_load = optuna.load_study
    missed = []

    def load_that_misses_once(**options):
        if not missed:
            missed.append(True)
            raise KeyError(options["study_name"])
        return real_load(**options)

    monkeypatch.setattr(optuna, "load_study", load_that_misses_once)
    second, _ = open_study(folder, record, create=True)
    assert missed and second._study_id == first._study_id
    assert len(second.get_trials(deepcopy=False)) == 1
    assert second.user_attrs["params"] == params


def _plan(tmp_path, **changes):
    params = {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}
    record = StudyRecord(**_record(params=params, n_trials=2, **changes))
    folder = StudyFolder(tmp_path / "study")
    folder.path.mkdir()
    folder.write(record)
    study, storage = open_study(folder, record, create=True)
    return Plan(folder, record, study, storage, workers=1, devices=[], threads_typed=False)


@pytest.mark.parametrize("asker", ["alive", "gone", "pid reused"])
def test_a_trial_asked_by_a_live_process_is_left_to_it_before_its_run_starts(tmp_path, asker):
    """Between asking for a trial and its run creating its folder, another process of the
    study (a second `convbench tune`, a resume) must not take the trial for a dead one; a trial
    whose asking process is gone (or whose pid now names another process) and which left no
    checkpoint is retried with its values."""
    plan = _plan(tmp_path)
    number = _ask(plan, threading.Lock())
    assert not plan.folder.trial_dir(number).exists(), "its run has not started"
    assert plan.study.get_trials(deepcopy=False)[number].user_attrs[WORKER]["pid"] == os.getpid()
    pid = os.getppid()  # a live process other than this one: pytest's parent
    if asker == "gone":
        pid = next(p for p in range(4_000_000, 1, -1) if not process_alive(p))
    started = process_started(os.getppid())
    assert started is not None
    worker = {"host": socket.gethostname(), "pid": pid, "started": started}
    if asker == "pid reused":
        worker["started"] = started - 1
    _set_attr(plan, number, key=WORKER, value=worker)
    said = settle(plan)
    trials = plan.study.get_trials(deepcopy=False)
    if asker == "alive":
        assert trials[number].state == TrialState.RUNNING and len(trials) == 1, said
        assert said == [f"trial {number}: its study process still runs it, left to it"]
        return
    assert trials[number].state == TrialState.FAIL and trials[number].user_attrs[RETRIED], said
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": number}
    assert retry.system_attrs["fixed_params"] == trials[number].params


def test_settling_holds_the_lock_workers_ask_under(tmp_path, monkeypatch):
    """A worker sets the trial's folder and process just after asking, under the study's lock:
    settling without that lock could read a trial in between and retry it."""
    plan = _plan(tmp_path)
    plan.study.enqueue_trial({"optimizer.lr": 0.01})
    plan.study.ask()  # running, with no folder or process named: a worker in mid-ask
    lock = plan.folder.lock_file(plan.record)
    seen = []
    real = type(plan.study).get_trials

    def get_trials(study, *args, **kwargs):
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                seen.append("held")
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
                seen.append("free")
        return real(study, *args, **kwargs)

    monkeypatch.setattr(type(plan.study), "get_trials", get_trials)
    settle(plan)
    assert seen and set(seen) == {"held"}
