"""`convbench runs` and `convbench eval` on runs that really failed or were really interrupted."""

import json
import signal
from pathlib import Path

import pytest

from convbench.run.checkpoint import load_checkpoint
from helpers.cli import TRUSTED, finish, run_cli, slow_overrides, start, wait_for_new_checkpoint


@pytest.mark.slow
def test_runs_and_eval_on_a_finished_a_failed_and_an_interrupted_run(mnist_root, tmp_path):
    outputs = tmp_path / "outputs"
    finished, failed, stopped = outputs / "finished", outputs / "failed", outputs / "stopped"
    common = [
        "dataset=mnist",
        f"dataset.root={mnist_root}",
        "dataset.val_size=100",
        "trainer.device=cpu",
        "trainer.num_threads=1",
    ]
    assert (
        run_cli(
            "train", *common, "trainer.epochs=1", f"hydra.run.dir={finished}", cwd=tmp_path
        ).returncode
        == 0
    )
    # Diverges in epoch 2 (lr x 1e12 after epoch 1): exit 4, status failed, best.pt of epoch 1.
    diverged = run_cli(
        "train",
        *common,
        "trainer.epochs=3",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        f"hydra.run.dir={failed}",
        cwd=tmp_path,
    )
    assert diverged.returncode == 4, diverged.stderr
    proc = start("train", *slow_overrides(mnist_root, stopped), cwd=tmp_path)
    wait_for_new_checkpoint(stopped / "checkpoints" / "last.pt", proc, 0.0)
    proc.send_signal(signal.SIGTERM)
    finish(proc, expected=3)

    listing = run_cli("runs", "--json", str(outputs), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in json.loads(listing.stdout)}
    assert rows["finished"]["status"] == "finished" and rows["finished"]["test_acc"] is not None
    assert rows["failed"]["status"] == "failed" and "epoch 2" in rows["failed"]["error"]
    assert rows["failed"]["test_acc"] is None and rows["failed"]["epoch"] == 1
    assert rows["stopped"]["status"] == "interrupted" and rows["stopped"]["test_acc"] is None
    table = run_cli("runs", str(outputs), cwd=tmp_path).stdout
    assert "failed" in table and "interrupted" in table and "finished" in table

    # eval needs only the folder, whatever became of the run.
    report = run_cli("eval", str(failed), *TRUSTED, "--json", "--device", "cpu", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert 0 <= json.loads(report.stdout)["test_acc"] <= 1
    # The interrupted run stopped inside epoch 1 (no best.pt yet): its last.pt is evaluated. Its
    # model is the tests' SlowLeNet, so the tests folder goes on PYTHONPATH, as for any own model.
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["state"]["step"] > 0
    report = run_cli(
        "eval",
        str(stopped),
        *TRUSTED,
        "--checkpoint",
        "last",
        "--json",
        "--device",
        "cpu",
        env_extra={"PYTHONPATH": str(Path(__file__).parent)},
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    assert 0 <= json.loads(report.stdout)["test_acc"] <= 1
