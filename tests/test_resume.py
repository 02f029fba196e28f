"""Never lose a run: SIGKILL and SIGTERM then resume equal an uninterrupted run exactly;
interrupted saves keep the last good checkpoint; a diverged loss stops without touching best.pt."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convbench.run.checkpoint import load_checkpoint
from helpers.cli import (
    TESTS,
    TRUSTED,
    finish,
    slow_overrides,
    start,
    stop_after_first_checkpoint,
    wait_for_new_checkpoint,
)

TIMING_KEYS = {"wall_time_s", "train_images_per_sec", "train_seconds"}


def comparable(metrics: dict) -> dict:
    """metrics.json without wall-clock figures, which no two runs share."""

    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in TIMING_KEYS}

    return {**strip(metrics), "history": [strip(h) for h in metrics["history"]]}


def assert_same_run(run_dir: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        ours = load_checkpoint(run_dir / "checkpoints" / name)
        theirs = load_checkpoint(reference / "checkpoints" / name)
        assert ours["model"].keys() == theirs["model"].keys()
        for key, tensor in theirs["model"].items():
            assert torch.equal(ours["model"][key], tensor), f"{name}: {key} differs"
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert comparable(ours) == comparable(theirs)
    # TensorBoard continues: every step exactly once, with the uninterrupted run's values.
    ours_tb, theirs_tb = EventAccumulator(str(run_dir)), EventAccumulator(str(reference))
    ours_tb.Reload(), theirs_tb.Reload()
    for tag in ("train/loss_step", "val/acc"):
        points = [(e.step, e.value) for e in ours_tb.Scalars(tag)]
        assert points == [(e.step, e.value) for e in theirs_tb.Scalars(tag)], tag


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_root) -> Path:
    """The uninterrupted run that interrupted ones must equal."""
    folder = tmp_path_factory.mktemp("reference")
    finish(start("train", *slow_overrides(mnist_root, folder / "run"), cwd=folder))
    return folder / "run"


@pytest.mark.slow
def test_sigkill_at_several_steps_then_resume_equals_uninterrupted(
    reference_run, mnist_root, tmp_path
):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    killed_at = []
    for attempt, delay in enumerate((0.12, 0.3, 0.2)):  # three kills at different points
        args = (
            ("train", *slow_overrides(mnist_root, run_dir))
            if attempt == 0
            else ("resume", str(run_dir), *TRUSTED)
        )
        before = last.stat().st_mtime if last.exists() else 0.0
        proc = start(*args, cwd=tmp_path)
        wait_for_new_checkpoint(last, proc, before)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        finish(proc, expected=-signal.SIGKILL)
        killed_at.append(load_checkpoint(last)["state"]["step"])
    assert len(set(killed_at)) == 3 and killed_at == sorted(killed_at), killed_at
    assert not (run_dir / "metrics.json").exists()
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    assert_same_run(run_dir, reference_run)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_exits_3_and_resumes_exactly(reference_run, mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = start("train", *slow_overrides(mnist_root, run_dir), cwd=tmp_path)
    output = stop_after_first_checkpoint(proc, run_dir, signal.SIGTERM)
    assert f"convbench resume {run_dir}" in output
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["error"] == "SIGTERM"
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]
    # last.pt holds the step the run stopped at: the one the warning names and status.json keeps.
    stopped = re.search(r"stopped by SIGTERM at epoch (\d+), step (\d+)", output)
    assert stopped, output
    assert (saved["epoch"] + 1, saved["step"]) == (int(stopped[1]), int(stopped[2]))
    assert status["step"] == saved["step"] and status["epoch"] == saved["epoch"]
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    assert_same_run(run_dir, reference_run)


@pytest.mark.slow
def test_resume_ignores_the_leftover_of_a_save_killed_mid_write(
    reference_run, mnist_root, tmp_path
):
    run_dir = tmp_path / "run"
    proc = start("train", *slow_overrides(mnist_root, run_dir), cwd=tmp_path)
    stop_after_first_checkpoint(proc, run_dir, signal.SIGKILL)
    leftover = run_dir / "checkpoints" / ".last.pt.tmp-99999"
    leftover.write_bytes(b"PK\x03\x04 half a zip")  # what a save killed mid-write leaves
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    assert not leftover.exists()
    assert_same_run(run_dir, reference_run)


@pytest.mark.slow
def test_nan_stops_with_a_clear_message_and_best_pt_untouched(cli, mnist_root, tmp_path):
    # Epoch 1 trains normally; then the step scheduler multiplies lr by 1e12: the loss explodes.
    run_dir = tmp_path / "run"
    result = cli(
        "train",
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.device=cpu",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr
    message = result.stderr
    # 500 training images in batches of 128: epoch 2 is steps 5 to 8, none checked before its end
    assert "in epoch 2 (between steps 5 and 8)" in message, message
    assert "last.pt and best.pt keep the last good epoch" in message, message
    assert "Traceback" not in message
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(run_dir / "checkpoints" / name)
        assert saved["state"]["epoch"] == 1
        assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_nonfinite_skips_are_bounded(cli, mnist_root, tmp_path):
    result = cli(
        "train",
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.device=cpu",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        "trainer.nonfinite_skips=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 4
    assert "more than trainer.nonfinite_skips=2" in result.stderr
    assert result.stdout.count("skipped") >= 2


@pytest.mark.slow
def test_the_own_model_example_resumes(tmp_path):
    """examples/own_model (a user's package on PYTHONPATH) stops on SIGTERM and resumes."""
    from helpers.fakedata import write_idx_dataset

    root = write_idx_dataset(tmp_path / "data", train=4100, test=100)
    run_dir = tmp_path / "run"
    repo = TESTS.parent
    env = {
        **os.environ,
        "PYTHONPATH": str(repo / "examples" / "own_model"),
        "PYTHONUNBUFFERED": "1",
    }
    args = [
        sys.executable,
        "-m",
        "convbench",
        "train",
        "--config-dir",
        str(repo / "examples/own_model/conf"),
        "model=tinynet",
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.checkpoint_every_n_steps=1",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_new_checkpoint(run_dir / "checkpoints" / "last.pt", proc, 0.0)
    proc.send_signal(signal.SIGTERM)
    finish(proc, expected=3)
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["step"]
    assert 0 < stopped_at < 3 * 125
    resume = [
        sys.executable,
        "-m",
        "convbench",
        "resume",
        str(run_dir),
        "--config-dir",
        str(repo / "examples/own_model/conf"),
    ]
    resumed = subprocess.run(
        resume, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "mynets.TinyNet"
    assert metrics["epochs"] == 3 and metrics["steps"] == 3 * 125  # 4,000 images / 32 per batch
