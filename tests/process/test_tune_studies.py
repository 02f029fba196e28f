"""`convbench tune` as processes: a study's trials, their folders and its database agree; a
study killed mid-trial resumes without a lost, doubled or touched trial; two studies sharing
one SQLite storage split its trials between them."""

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from helpers.cli import ONE_THREAD, cli_env, finish, start, tiny_mnist_overrides, wait_until


def study_overrides(root: Path, folder: Path, *extra: str) -> list[str]:
    return [
        "tune=lenet_sgd",
        *tiny_mnist_overrides(root),
        ONE_THREAD,
        "trainer.log_images=false",
        "tune.startup_trials=1",
        "tune.warmup_epochs=0",
        f"tune.dir={folder}",
        *extra,
    ]


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


STATE_OF_FOLDER = {"COMPLETE": "finished", "PRUNED": "pruned"}


def test_a_study_agrees_with_its_folders_and_names_a_command_for_the_best(mnist_root, tmp_path):
    study = tmp_path / "study"
    output = finish(
        start(
            "tune",
            *study_overrides(mnist_root, study, "tune.n_trials=4", "tune.workers=2"),
            cwd=tmp_path,
        )
    )
    assert "study folder: study (SQLite in the folder)" in output, "printed at the start"
    assert "Study study: 4 of 4 trials" in output, "and at the end"
    trials = trials_of(f"sqlite:///{study / 'study.db'}", "lenet_sgd")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    for trial in trials:  # each trial an ordinary run folder, its state its run's status
        run = study / f"trial-{trial.number:04d}"
        status = json.loads((run / "status.json").read_text())["status"]
        assert status == STATE_OF_FOLDER[trial.state.name], (trial.number, status)
        assert trial.user_attrs["folder"] == str(run.resolve())
        if trial.state.name == "COMPLETE":
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["tune"]["trial"] == trial.number
            assert metrics["tune"]["params"] == pytest.approx(trial.params)
            assert trial.value == max(epoch["val_acc"] for epoch in metrics["history"])
            config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
            assert config["optimizer"]["lr"] == pytest.approx(trial.params["optimizer.lr"])
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"Best: trial {best.number}, val_acc {best.value:.4f}" in output
    # Trial 0 trained the config's own values, what the answer measures the best against.
    own = min(trials, key=lambda t: t.number)
    assert own.user_attrs["baseline"] is True
    assert own.params["optimizer.lr"] == 0.05 and own.params["model.activation"] == "relu"
    assert own.params["optimizer.momentum"] == 0.9
    assert ("No other trial beat the config's own values (trial 0)" in output) == (best.number == 0)
    # The full-budget command composes the best trial's values, without the study's budget.
    lines = output.splitlines()
    said = next(index for index, line in enumerate(lines) if line.startswith("Train it on"))
    command = lines[said + 1]
    args = shlex.split(command)
    assert args[:2] == ["convbench", "train"]
    job = subprocess.run(
        [sys.executable, "-m", "convbench", *args[1:], "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
        timeout=120,
    )
    assert job.returncode == 0, job.stderr
    full = yaml.safe_load(job.stdout)
    assert full["optimizer"]["lr"] == pytest.approx(best.params["optimizer.lr"])
    assert full["model"]["activation"] == best.params["model.activation"]
    assert full["trainer"]["epochs"] == 15 and full["dataset"]["train_limit"] is None, "full budget"


def test_a_study_killed_mid_trial_resumes_without_losing_or_doubling_one(mnist_root, tmp_path):
    study = tmp_path / "study"
    args = study_overrides(
        mnist_root, study, "tune.n_trials=3", "tune.workers=1", "trainer.epochs=3", "tune.seed=1"
    )
    proc = start("tune", *args, cwd=tmp_path, start_new_session=True)
    second = study / "trial-0001" / "checkpoints" / "last.pt"
    wait_until(second.is_file, proc, "trial 1's first checkpoint", timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its running trial, without warning
    proc.communicate(timeout=60)
    finished = snapshot(study / "trial-0000")
    assert json.loads((study / "trial-0000" / "status.json").read_text())["status"] in {
        "finished",
        "pruned",
    }
    output = finish(start("resume", str(study), cwd=tmp_path))
    assert "trial 1" in output and "continues from its checkpoint" in output, output
    trials = trials_of(f"sqlite:///{study / 'study.db'}", "lenet_sgd")
    counted = [t for t in trials if t.state.name in STATE_OF_FOLDER]
    assert len(counted) == 3, [(t.number, t.state.name) for t in trials]
    assert len({t.number for t in trials}) == len(trials), "no number twice"
    assert snapshot(study / "trial-0000") == finished, "a finished trial's folder is untouched"
    assert "resuming" in (study / "trial-0001" / "train.log").read_text()


def test_two_studies_on_one_sqlite_storage_share_its_trials(mnist_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = ("tune.n_trials=4", "tune.workers=1", f"tune.storage={url}", "tune.study_name=shared")
    procs = [
        start("tune", *study_overrides(mnist_root, tmp_path / name, *shared), cwd=tmp_path)
        for name in ("a", "b")
    ]
    for proc in procs:
        finish(proc)
    trials = trials_of(url, "shared")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3], "four between them, none doubled"
    assert all(t.state.name in STATE_OF_FOLDER for t in trials)
    folders = sorted(p.name for p in tmp_path.glob("[ab]/trial-*"))
    assert folders == [f"trial-{n:04d}" for n in range(4)], "each trial ran in one place"
    with sqlite3.connect(tmp_path / "shared.db") as db:
        (count,) = db.execute("select count(*) from trials").fetchone()
    assert count == 4
