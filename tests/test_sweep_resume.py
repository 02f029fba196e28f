"""`convbench resume SWEEP_DIR` finishes a sweep in place: finished jobs are skipped (untouched),
the stopped job continues from its last.pt, jobs that never started are launched with their
recorded overrides; the weights equal an uninterrupted sweep's."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from convbench.run.checkpoint import load_checkpoint
from helpers.cli import TRUSTED, finish, slow_overrides, start, wait_until

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert f"Continue with: convbench resume {sweep_dir.resolve()}" in output
    resumed = finish(start("resume", str(sweep_dir), *TRUSTED, cwd=tmp_path))
    assert resumed.count(": finished (") == len(ACTIVATIONS)
