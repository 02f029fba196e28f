"""Stop signals, sent for real to a training process whose checkpoints come at epoch ends only
(a run that saved every step would hide a stop that saves nothing): SIGTERM, SIGINT (Ctrl-C)
and SIGUSR1 (SLURM's warning before pre-emption) each finish the step, write last.pt where the
run stands and exit 3; a second signal stops at once; a signal while the data is decoded ends
the run with its status saying so."""

import json
import os
import signal
import time

import pytest
import torch
from PIL import Image

from helpers.cli import TRUSTED, finish, run_cli, start, wait_until
from helpers.imagefolders import write_class_folders


def overrides(root, run_dir, seconds_per_step: float = 0.05) -> list[str]:
    return [
        *TRUSTED,
        "model=slowlenet",
        f"model.seconds_per_step={seconds_per_step}",
        "dataset=mnist",
        f"dataset.root={root}",
        "dataset.val_size=100",
        "trainer.epochs=3",
        "trainer.batch_size=64",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.log_images=false",
        "trainer.checkpoint_every_n_steps=0",  # last.pt at epoch ends only, and on a stop
        f"hydra.run.dir={run_dir}",
    ]


def saved_state(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]


def epoch_one_saved(run_dir) -> bool:
    last = run_dir / "checkpoints" / "last.pt"
    return last.is_file() and saved_state(run_dir)["epoch"] == 1


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["SIGTERM", "SIGINT", "SIGUSR1"]
)
def test_a_stop_signal_saves_where_the_run_stands(mnist_root, tmp_path, signum):
    run_dir = tmp_path / "run"
    proc = start("train", *overrides(mnist_root, run_dir), cwd=tmp_path)
    wait_until(lambda: epoch_one_saved(run_dir), proc, "epoch 1 saved")
    steps_per_epoch = saved_state(run_dir)["step"]
    time.sleep(0.3)  # a few steps into epoch 2
    proc.send_signal(signum)
    output = finish(proc, expected=3)
    state = saved_state(run_dir)
    assert state["epoch"] == 1 and 0 < state["batch_in_epoch"] < steps_per_epoch, (
        "last.pt was written at the stop, mid-epoch, not only at the epoch's end"
    )
    assert state["step"] == steps_per_epoch + state["batch_in_epoch"]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert f"Interrupted by {signal.Signals(signum).name}" in output
    assert output.count(f"convbench resume {run_dir.relative_to(tmp_path)}") == 1, (
        "one resume hint, not two"
    )


def test_a_second_signal_stops_at_once(mnist_root, tmp_path):
    """Steps of 3 s: the first signal waits for the step to end, the second does not."""
    run_dir = tmp_path / "run"
    proc = start("train", *overrides(mnist_root, run_dir, seconds_per_step=3.0), cwd=tmp_path)
    log = run_dir / "train.log"
    wait_until(lambda: log.is_file() and "run folder: " in log.read_text(), proc, "built")
    time.sleep(1.0)  # inside the first step
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = finish(proc, expected=3)
    assert time.monotonic() - sent < 2.0, "the second signal waited for the step to end"
    assert "Interrupted by a second SIGTERM before the run's first checkpoint" in output
    assert "Traceback" not in output
    assert not (run_dir / "checkpoints" / "last.pt").exists(), "nothing saved on the way out"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"


def test_a_signal_while_the_data_is_decoded_ends_the_run_with_a_status(tmp_path):
    """1,200 images of 512x512 pixels take seconds to decode: the signal comes meanwhile."""
    images = tmp_path / "images"
    for label in ("dark", "light"):
        (images / label).mkdir(parents=True)
        picture = Image.linear_gradient("L").resize((512, 512))
        for n in range(600):
            picture.save(images / label / f"{n:04d}.png")
    run_dir = tmp_path / "run"
    proc = start(
        "train",
        "dataset=imagefolder",
        f"dataset.root={images}",
        "dataset.native_size=64",
        "trainer.num_threads=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    log = run_dir / "train.log"
    wait_until(lambda: log.is_file() and "decoding" in log.read_text(), proc, "decoding")
    proc.send_signal(signal.SIGTERM)
    output = finish(proc, expected=3)
    assert "before the run's first checkpoint: nothing was saved" in output
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and "nothing to resume" in status["error"]


def test_a_killed_run_is_listed_with_the_epochs_it_saved(mnist_root, tmp_path):
    """SIGKILL leaves no chance to write anything: status.json, written with every
    checkpoint, still says how far the run got, and `runs` shows it interrupted there."""
    run_dir = tmp_path / "run"
    proc = start("train", *overrides(mnist_root, run_dir), cwd=tmp_path)

    def recorded() -> bool:  # status.json follows last.pt by a moment: a kill between the two
        status = run_dir / "status.json"  # leaves it one epoch behind, never ahead
        return epoch_one_saved(run_dir) and '"epoch": 1' in status.read_text()

    wait_until(recorded, proc, "epoch 1 saved and recorded")
    proc.kill()
    proc.wait()
    listed = run_cli("runs", str(tmp_path), "--json", cwd=tmp_path)
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "interrupted" and row["epoch"] == 1 and row["epochs"] == 3


def test_a_signal_to_the_whole_group_during_a_streamed_final_test_is_a_stop(tmp_path):
    """With dataset.stream=true the test's images come from reader processes, which a signal
    to the process group (SLURM's, a terminal's) ends too: the test cannot finish, and the run
    stops as interrupted (exit 3), resumable, not failed."""
    images = tmp_path / "images"
    write_class_folders(images, per_class=24)
    run_dir = tmp_path / "run"
    proc = start(
        "train",
        *TRUSTED,
        "model=slowlenet",
        "model.seconds_per_step=0",
        "+model.seconds_per_eval_batch=0.5",
        "dataset=imagefolder",
        f"dataset.root={images}",
        "dataset.native_size=12",
        "dataset.stream=true",
        "dataset.test_size=0.5",
        "dataset.num_workers=2",
        "trainer.epochs=1",
        "trainer.eval_batch_size=1",
        "trainer.num_threads=1",
        "trainer.log_images=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        start_new_session=True,
    )
    log = run_dir / "train.log"
    wait_until(lambda: log.is_file() and "epoch 1/1" in log.read_text(), proc, "the final test")
    time.sleep(1.0)  # the test is under way: a batch each 0.5 s
    os.killpg(proc.pid, signal.SIGTERM)
    output = finish(proc, expected=3)
    assert "Traceback" not in output
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and not (run_dir / "metrics.json").exists()
