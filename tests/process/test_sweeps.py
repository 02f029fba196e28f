"""Sweeps and runs as processes: `convbench resume SWEEP_DIR` finishes a killed sweep in place
(finished jobs skipped, untouched; the stopped job continued from its last.pt; jobs that never
started launched with their recorded overrides; the weights equal an uninterrupted sweep's), a
stop signal during a sweep points at the sweep, Hydra's launcher plugins run the jobs in
processes of their own (joblib side by side, submitit's local executor as on SLURM), and one run
is trained by one process: a second process on it exits 2 naming the holder, and the kernel
drops the lock when the holder dies, even by SIGKILL. Sweeps in this process are
tests/unit/test_multirun.py."""

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch

from convbench.run.checkpoint import load_checkpoint
from helpers.cli import (
    TRUSTED,
    finish,
    run_cli,
    slow_overrides,
    start,
    tiny_mnist_overrides,
    wait_until,
)

# --- resuming a sweep ---------------------------------------------------------------------------

ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")


def sweep_args(root: Path, sweep_dir: Path) -> list[str]:
    overrides = [
        o
        for o in slow_overrides(root, sweep_dir / "unused", epochs=2)
        if not o.startswith("hydra.run.dir=")
    ]
    return [
        "-m",
        f"model.activation={','.join(ACTIVATIONS)}",
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
    ]


def jobs(sweep_dir: Path) -> dict[str, Path]:
    """Job number -> folder."""
    return {path.name.split("_")[0]: path for path in sweep_dir.iterdir() if path.is_dir()}


def contents(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a job's folder: its bytes and modification time."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def reference_sweep(mnist_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    finish(start("train", *sweep_args(mnist_root, folder / "sweep"), cwd=folder))
    return folder / "sweep"


def test_a_killed_sweep_is_finished_by_resume(reference_sweep, mnist_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = start("train", *sweep_args(mnist_root, sweep_dir), cwd=tmp_path, start_new_session=True)

    def job_2_trains() -> bool:
        found = [p for n, p in jobs(sweep_dir).items() if n == "2"] if sweep_dir.is_dir() else []
        return bool(found) and (found[0] / "checkpoints" / "last.pt").is_file()

    wait_until(job_2_trains, proc, "job 2 saved a checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a pre-emption does
    finish(proc, expected=-signal.SIGKILL)
    assert sorted(jobs(sweep_dir)) == ["0", "1", "2"], "job 3 never started"
    finished_before = {n: contents(p) for n, p in jobs(sweep_dir).items() if n in "01"}

    output = finish(start("resume", str(sweep_dir), *TRUSTED, cwd=tmp_path))
    assert "job 0: finished (skipped: finished before)" in output
    assert "job 1: finished (skipped: finished before)" in output
    assert "job 2: finished (resumed)" in output and "job 3: finished (started)" in output
    for number, before in finished_before.items():  # not one byte of a finished job changed
        assert contents(jobs(sweep_dir)[number]) == before, f"job {number} was run again"

    reference = jobs(reference_sweep)
    for number, folder in jobs(sweep_dir).items():
        assert folder.name == reference[number].name
        for name in ("last.pt", "best.pt"):
            ours = load_checkpoint(folder / "checkpoints" / name)["model"]
            theirs = load_checkpoint(reference[number] / "checkpoints" / name)["model"]
            assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"job {number} {name}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert (
            metrics["test_acc"]
            == json.loads((reference[number] / "metrics.json").read_text())["test_acc"]
        )


def test_a_stop_signal_during_a_sweep_points_at_the_sweep(mnist_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = start("train", *sweep_args(mnist_root, sweep_dir), cwd=tmp_path)
    wait_until(
        lambda: sweep_dir.is_dir() and any(sweep_dir.glob("*/checkpoints/last.pt")),
        proc,
        "a job's checkpoint",
    )
    proc.send_signal(signal.SIGTERM)
    output = finish(proc, expected=3)
    assert f"Continue with: convbench resume {sweep_dir.relative_to(tmp_path)}" in output
    resumed = finish(start("resume", str(sweep_dir), *TRUSTED, cwd=tmp_path))
    assert resumed.count(": finished (") == len(ACTIVATIONS)


# --- launcher plugins -----------------------------------------------------------------------------


def launched_sweep(launcher: str, mnist_root, tmp_path, *extra: str):
    """A sweep of four jobs through `launcher`, the second failing (an unknown activation); the
    failed-jobs summary and the exit code come from the jobs' folders, so they hold whichever
    process ran the job."""
    folder = tmp_path / "sweep"
    result = run_cli(
        "train",
        "-m",
        f"hydra/launcher={launcher}",
        "model.activation=relu,swishy,tanh,gelu",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.sweep.dir={folder}",
        *extra,
        cwd=tmp_path,
    )
    jobs = {path.name.split("_")[0]: path for path in folder.iterdir() if path.is_dir()}
    return result, jobs


def test_joblib_runs_jobs_side_by_side_on_their_share_of_the_cores(mnist_root, tmp_path):
    result, jobs = launched_sweep("parallel", mnist_root, tmp_path, "hydra.launcher.n_jobs=2")
    assert result.returncode == 1, result.stderr
    assert "1 job(s) of the sweep failed:" in result.stderr and "  job 1 (" in result.stderr
    assert "swishy" in result.stderr
    assert sorted(jobs) == ["0", "1", "2", "3"]
    for number in ("0", "2", "3"):
        assert (jobs[number] / "metrics.json").is_file(), f"job {number} finished"
        log = (jobs[number] / "train.log").read_text()
        threads = max(1, os.cpu_count() // 2)
        assert f"job {number}: {threads} torch thread(s), 2 job(s) side by side" in log
    assert not (jobs["1"] / "metrics.json").exists()


def test_submitit_local_runs_each_job_in_its_own_process(mnist_root, tmp_path):
    result, jobs = launched_sweep("submitit_local", mnist_root, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "1 job(s) of the sweep failed:" in result.stderr and "  job 1 (" in result.stderr
    pids = set()
    for number in ("0", "2", "3"):
        status = json.loads((jobs[number] / "status.json").read_text())
        assert status["status"] == "finished"
        pids.add(status["pid"])
    assert len(pids) == 3, "each job ran in a process of its own"


# --- one run, one process -------------------------------------------------------------------------


def holds_the_run(run_dir: Path, pid: int):
    """A condition: status.json says process `pid` is training the run."""

    def holding() -> bool:
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return False
        return status["pid"] == pid and status["status"] == "running"

    return holding


def test_two_resumes_of_one_run_one_proceeds_and_a_kill_frees_it(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    first = start("train", *slow_overrides(mnist_root, run_dir, epochs=20), cwd=tmp_path)
    wait_until(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), first, "a checkpoint")
    first.send_signal(signal.SIGKILL)
    finish(first, expected=-signal.SIGKILL)

    holder = start("resume", str(run_dir), *TRUSTED, cwd=tmp_path)
    wait_until(holds_the_run(run_dir, holder.pid), holder, "the resume holds the run")
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    second = run_cli("resume", str(run_dir), *TRUSTED, cwd=tmp_path, timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"process {holder.pid} on host {socket.gethostname()}" in second.stderr
    assert "is in use" in second.stderr and "Traceback" not in second.stderr
    assert json.loads((run_dir / "status.json").read_text())["pid"] == holder.pid, "untouched"
    assert sorted(run_dir.glob("events.out.tfevents.*")) == events, "no event file opened"

    holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel frees the lock
    finish(holder, expected=-signal.SIGKILL)
    third = start("resume", str(run_dir), *TRUSTED, cwd=tmp_path)
    wait_until(holds_the_run(run_dir, third.pid), third, "the next resume proceeds", timeout=30)
    finish(third)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 20
