"""Never lose a run: a training process killed (SIGKILL, no chance to save) or stopped (SIGTERM)
from outside, then `convbench resume`, ends exactly where the uninterrupted run ends: the same
weights, metrics and TensorBoard points. On the tiny MNIST fixture (several kills, a save killed
mid-write), with a weight average, while robustness is measured, on an image folder, streamed
from disk (SIGTERM to the process or its whole group), and for a user's own model package on
PYTHONPATH. The same promise in this process, with a stop the model sends itself, is
tests/unit/test_resume_exact.py."""

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
    ONE_THREAD,
    TESTS,
    TRUSTED,
    finish,
    run_cli,
    slow_overrides,
    start,
    stop_after_first_checkpoint,
    wait_for_new_checkpoint,
    wait_until,
)
from helpers.fakedata import write_idx_dataset
from helpers.imagefolders import write_class_folders, write_shape_folders

TIMING_KEYS = {"wall_time_s", "train_images_per_sec", "train_seconds"}


def comparable(metrics: dict) -> dict:
    """metrics.json without wall-clock figures, which no two runs share."""

    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in TIMING_KEYS}

    return {**strip(metrics), "history": [strip(h) for h in metrics["history"]]}


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_weights(run_dir: Path, reference: Path, which: str = "last.pt") -> None:
    ours = load_checkpoint(run_dir / "checkpoints" / which)["model"]
    theirs = load_checkpoint(reference / "checkpoints" / which)["model"]
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), f"{which}: {key} differs"


def assert_same_run(run_dir: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        assert_same_weights(run_dir, reference, name)
    assert comparable(metrics_of(run_dir)) == comparable(metrics_of(reference))
    # TensorBoard continues: every step exactly once, with the uninterrupted run's values.
    ours_tb, theirs_tb = EventAccumulator(str(run_dir)), EventAccumulator(str(reference))
    ours_tb.Reload(), theirs_tb.Reload()
    for tag in ("train/loss_step", "val/acc"):
        points = [(e.step, e.value) for e in ours_tb.Scalars(tag)]
        assert points == [(e.step, e.value) for e in theirs_tb.Scalars(tag)], tag


# --- the tiny MNIST fixture ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_root) -> Path:
    """The uninterrupted run that interrupted ones must equal."""
    folder = tmp_path_factory.mktemp("reference")
    finish(start("train", *slow_overrides(mnist_root, folder / "run"), cwd=folder))
    return folder / "run"


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


def test_sigterm_mid_epoch_saves_exits_3_and_resumes_exactly(reference_run, mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = start("train", *slow_overrides(mnist_root, run_dir), cwd=tmp_path)
    output = stop_after_first_checkpoint(proc, run_dir, signal.SIGTERM)
    assert f"convbench resume {run_dir.relative_to(tmp_path)}" in output
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


# --- a weight average, and robustness measured at the end ---------------------------------------


def test_the_average_is_validated_kept_as_best_and_resumed_exactly(mnist_root, tmp_path):
    args = [*slow_overrides(mnist_root, tmp_path / "x", epochs=3), "trainer.ema=0.9"]
    args = [a for a in args if not a.startswith("hydra.run.dir=")]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    finish(start("train", *args, f"hydra.run.dir={reference}", cwd=tmp_path))
    best = load_checkpoint(reference / "checkpoints" / "best.pt")
    average = {k.removeprefix("module."): v for k, v in best["ema"].items() if k != "n_averaged"}
    assert all(torch.equal(best["model"][k], average[k]) for k in best["model"])
    last = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert not all(torch.equal(last["model"][k], average[k]) for k in last["model"]), (
        "last.pt keeps the trained weights, for resuming"
    )
    proc = start("train", *args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    last_pt = run_dir / "checkpoints" / "last.pt"
    wait_until(
        lambda: last_pt.is_file() and load_checkpoint(last_pt)["state"]["step"] >= 10,
        proc,
        "a checkpoint in epoch 2",
    )
    proc.send_signal(signal.SIGKILL)
    finish(proc, expected=-signal.SIGKILL)
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    for name in ("last.pt", "best.pt"):
        ours = load_checkpoint(run_dir / "checkpoints" / name)
        theirs = load_checkpoint(reference / "checkpoints" / name)
        for part in ("model", "ema"):
            assert all(torch.equal(ours[part][k], theirs[part][k]) for k in theirs[part]), part


EVALUATE = ["robustness.shift=[0,2]", "robustness.illumination=[0,0.5]"]


def test_a_run_stopped_while_measuring_records_the_same_numbers_on_resume(mnist_root, tmp_path):
    """SIGKILL after the shift values are measured, while the illumination values are (each
    evaluation batch sleeps), then `convbench resume`: the same numbers as an uninterrupted run,
    and each TensorBoard point once."""
    slow = ["trainer.log_images=false", "+model.seconds_per_eval_batch=0.5", *EVALUATE]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    finish(start("train", *slow_overrides(mnist_root, reference, epochs=1), *slow, cwd=tmp_path))
    proc = start("train", *slow_overrides(mnist_root, run_dir, epochs=1), *slow, cwd=tmp_path)
    log = run_dir / "train.log"
    wait_until(
        lambda: log.is_file() and "test acc under shift" in log.read_text(),
        proc,
        "the shift values were measured",
    )
    proc.send_signal(signal.SIGKILL)
    finish(proc, expected=-signal.SIGKILL)
    assert not (run_dir / "metrics.json").exists(), "killed before the end of the phase"
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    ours, theirs = metrics_of(run_dir), metrics_of(reference)
    assert ours["robustness"] == theirs["robustness"]
    assert ours["test_acc"] == theirs["test_acc"]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for kind, steps in (("shift", [0, 2]), ("illumination", [0, 50])):
        assert [event.step for event in events.Scalars(f"robust/{kind}_acc")] == steps


# --- an image folder, decoded or streamed ---------------------------------------------------------

NATIVE = 16  # the side images are stored at in the runs: small, and LeNet pads it to 32


def folder_overrides(root: Path, run_dir: Path, *extra: str, epochs: int = 2) -> list[str]:
    """A seconds-long CPU run on an image folder."""
    return [
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.native_size={NATIVE}",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=64",
        "trainer.device=cpu",
        ONE_THREAD,
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def slow_folder_overrides(root: Path, run_dir: Path) -> list[str]:
    """Like helpers.cli.slow_overrides, on an image folder: slow enough to be signalled."""
    return [
        *folder_overrides(root, run_dir, epochs=3),
        "trainer.batch_size=4",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.log_every_n_steps=1",
        "model._target_=helpers.slowmodels.SlowLeNet",
        "+model.seconds_per_step=0.05",
    ]


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slow") / "images"
    write_class_folders(root, per_class=12)
    return root


@pytest.fixture(scope="module")
def folder_reference_run(slow_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("reference")
    finish(start("train", *slow_folder_overrides(slow_root, work / "run"), cwd=work))
    return work / "run"


def test_sigterm_then_resume_equals_an_uninterrupted_run(slow_root, folder_reference_run, tmp_path):
    """SIGTERM mid-training on an image folder, then `convbench resume`."""
    run_dir = tmp_path / "run"
    proc = start("train", *slow_folder_overrides(slow_root, run_dir), cwd=tmp_path)
    interrupted = stop_after_first_checkpoint(proc, run_dir, signal.SIGTERM)
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    assert f"convbench resume {run_dir.relative_to(tmp_path)}" in interrupted
    for name in ("last.pt", "best.pt"):
        ours = load_checkpoint(run_dir / "checkpoints" / name)["model"]
        theirs = load_checkpoint(folder_reference_run / "checkpoints" / name)["model"]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in theirs), name
    ours, theirs = metrics_of(run_dir), metrics_of(folder_reference_run)
    assert ours["test_acc"] == theirs["test_acc"]
    assert [h["val_acc"] for h in ours["history"]] == [h["val_acc"] for h in theirs["history"]]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


def stream_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Two epochs of a streamed-from-disk run, augmented, as tests/unit/test_stream.py runs it."""
    return [
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.native_size={NATIVE}",
        "dataset.val_size=0.2",
        "dataset.test_size=0.2",
        "trainer.channels_last=false",
        "trainer.epochs=2",
        "trainer.batch_size=8",
        "trainer.eval_batch_size=16",
        "trainer.device=cpu",
        ONE_THREAD,
        "dataset.augment.crop_padding=2",
        "dataset.augment.flip=true",
        "dataset.stream=true",
        "dataset.num_workers=2",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return write_shape_folders(tmp_path_factory.mktemp("runs") / "images", per_class=24, seed=1)


@pytest.fixture(scope="module")
def streamed_run(tmp_path_factory, shapes_root) -> Path:
    """An uninterrupted streamed run with two reading processes."""
    cwd = tmp_path_factory.mktemp("streamed")
    result = run_cli("train", *stream_overrides(shapes_root, cwd / "run"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "run"


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_streamed_run(
    streamed_run, shapes_root, tmp_path, to
):
    """SIGTERM to the training process (`kill PID`), or to its whole process group, readers
    included (what SLURM sends a job before its time is up): the run stops after the step with
    last.pt, exit status 3, and its resume ends with the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    slow = (
        "model._target_=helpers.slowmodels.SlowLeNet",
        "+model.seconds_per_step=0.05",
        "trainer.checkpoint_every_n_steps=1",
    )
    proc = start(
        "train",
        *stream_overrides(shapes_root, run_dir, *slow),
        cwd=tmp_path,
        start_new_session=True,
    )
    wait_for_new_checkpoint(run_dir / "checkpoints" / "last.pt", proc, 0.0)  # after step 1
    if to == "group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    output = finish(proc, expected=3)
    assert "Traceback" not in output and "DataLoader worker" not in output
    assert len(re.findall(r"SIGTERM received", output)) == 1  # not again by the readers
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]
    assert saved["epoch"] == 0 and 0 < saved["batch_in_epoch"] < 6  # mid-epoch (6 batches)
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    assert_same_weights(run_dir, streamed_run, "last.pt")
    assert_same_weights(run_dir, streamed_run, "best.pt")
    assert metrics_of(run_dir)["test_acc"] == metrics_of(streamed_run)["test_acc"]


# --- a user's own model package -------------------------------------------------------------------


def test_the_own_model_example_resumes(tmp_path):
    """examples/own_model (a user's package on PYTHONPATH) stops on SIGTERM and resumes."""
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
