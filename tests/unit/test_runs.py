"""`convbench runs`: one real finished run plus hand-made run folders in every other state, and
runs that really finished, failed and were interrupted (by a SIGTERM their model sends its own
process, helpers.slowmodels.StopsItself), listed and evaluated. Every command is `convbench` in
this process (helpers.inprocess)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from convbench.run.checkpoint import load_checkpoint
from helpers.cli import ONE_THREAD, TRUSTED, tiny_mnist_overrides
from helpers.inprocess import convbench
from helpers.runfolders import dead_pid


def make_run(folder: Path, started: float, status: dict | None, overrides: list[str]) -> None:
    """A run folder as Hydra and the status writer leave it, without training."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    config = {
        "model": {"_target_": "convbench.models.mlp.MLP"},
        "dataset": {"name": "cifar10"},
        "trainer": {"epochs": 10},
    }
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    os.utime(hydra / "config.yaml", (started, started))
    if status is not None:
        record = {
            "updated": "2025-01-01T12:00:00+00:00",
            "step": 7,
            "epochs": 10,
            "best_val_acc": None,
            "error": None,
            "pid": os.getpid(),
            **status,
        }
        (folder / "status.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def outputs(mnist_root, tmp_path_factory) -> Path:
    """outputs/ with a real finished run (newest) and hand-made runs in the other states."""
    work = tmp_path_factory.mktemp("runs")
    root = work / "outputs"
    result = convbench(
        "train",
        *tiny_mnist_overrides(mnist_root),
        ONE_THREAD,
        "model=mlp",
        f"hydra.run.dir={root / 'real'}",
        cwd=work,
    )
    assert result.code == 0, result.stderr
    day = 1_700_000_000  # hand-made runs started before the real one, an hour apart
    failed = {"status": "failed", "epoch": 3, "error": "loss became nan\nat step 7"}
    make_run(root / "sweep" / "0_lr=0.1", day, failed, ["optimizer.lr=0.1", "trainer.device=cpu"])
    make_run(
        root / "sweep" / "1_lr=1",
        day + 3600,
        {"status": "running", "epoch": 2, "pid": dead_pid(), "best_val_acc": 0.5},
        ["optimizer.lr=1"],
    )
    make_run(
        root / "live",
        day + 7200,
        {"status": "running", "epoch": 4, "best_val_acc": 0.625},
        ["model=mlp", "dataset.root=/data/x"],
    )
    make_run(root / "stopped", day + 10800, {"status": "interrupted", "epoch": 5}, [])
    make_run(root / "old", day + 14400, None, ["seed=3"])
    return root


def test_json_rows_hold_each_runs_state(outputs):
    # Run from outputs/: the runs below the current folder show relative to it.
    result = convbench("runs", str(outputs), "--json", cwd=outputs)
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    # oldest first, by start time; the real run started last
    assert [row["run"] for row in rows] == [
        "sweep/0_lr=0.1",
        "sweep/1_lr=1",
        "live",
        "stopped",
        "old",
        "real",
    ]
    by_run = {row["run"]: row for row in rows}
    assert by_run["sweep/0_lr=0.1"]["status"] == "failed"
    assert by_run["sweep/0_lr=0.1"]["overrides"] == ["optimizer.lr=0.1"]  # device: not a key
    assert by_run["sweep/1_lr=1"]["status"] == "interrupted", "its process is gone"
    assert by_run["live"]["status"] == "running", "its process (this test) is alive"
    assert by_run["live"]["overrides"] == ["model=mlp"]  # dataset.root: where, not what
    assert (by_run["live"]["epoch"], by_run["live"]["epochs"]) == (4, 10)
    assert by_run["live"]["best_val_acc"] == 0.625 and by_run["live"]["test_acc"] is None
    assert by_run["stopped"]["status"] == "interrupted"
    assert by_run["old"]["status"] == "unknown" and by_run["old"]["epoch"] is None
    assert by_run["old"]["model"] == "mlp" and by_run["old"]["dataset"] == "cifar10"


def test_real_run_row_matches_its_metrics(outputs):
    rows = json.loads(convbench("runs", str(outputs), "--json", cwd=outputs).stdout)
    real = next(row for row in rows if row["run"] == "real")
    metrics = json.loads((outputs / "real" / "metrics.json").read_text())
    assert real["status"] == "finished"
    status = json.loads((outputs / "real" / "status.json").read_text())  # the run's own word
    assert (status["status"], status["epoch"], status["epochs"]) == ("finished", 2, 2)
    assert (real["model"], real["dataset"]) == ("mlp", "mnist")
    assert (real["epoch"], real["epochs"]) == (2, 2)
    assert real["test_acc"] == metrics["test_acc"]
    assert real["best_val_acc"] == metrics["best_val_acc"]
    assert "trainer.epochs=2" in real["overrides"] and "trainer.device=cpu" not in real["overrides"]
    assert not any(o.startswith("dataset.root=") for o in real["overrides"])


def test_table_has_a_row_per_run_and_the_errors(outputs):
    result = convbench("runs", str(outputs), cwd=outputs)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "When",
        "Model",
        "Dataset",
        "Overrides",
        "Epochs",
        "Best",
        "val",
        "Test",
        "Status",
        "Run",
    ]
    rows = {line.split()[-1]: line.split()[:-1] for line in lines[1:7]}
    assert rows["sweep/0_lr=0.1"][-1] == "failed" and "3/10" in rows["sweep/0_lr=0.1"]
    assert rows["sweep/1_lr=1"][-1] == "interrupted" and "0.5000" in rows["sweep/1_lr=1"]
    assert rows["live"][-1] == "running" and "4/10" in rows["live"]
    assert rows["old"][-4:] == ["?/10", "-", "-", "unknown"]
    assert rows["real"][-1] == "finished" and "2/2" in rows["real"]
    assert "  sweep/0_lr=0.1: loss became nan at step 7" in lines


def test_runs_outside_the_current_folder_show_as_absolute_paths(outputs, tmp_path):
    """From a folder that does not hold them, every run reads as a path any command accepts
    from there: absolute."""
    result = convbench("runs", str(outputs), "--json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted(row["run"] for row in rows) == sorted(
        str((outputs / name).resolve())
        for name in ("sweep/0_lr=0.1", "sweep/1_lr=1", "live", "stopped", "old", "real")
    )


def test_missing_folder_exits_2_and_empty_folder_says_so(tmp_path):
    missing = convbench("runs", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.code == 2 and "nope is not a folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = convbench("runs", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.code == 0 and "No runs under" in empty.stdout


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
        convbench(
            "train", *common, "trainer.epochs=1", f"hydra.run.dir={finished}", cwd=tmp_path
        ).code
        == 0
    )
    # Diverges in epoch 2 (lr x 1e12 after epoch 1): exit 4, status failed, best.pt of epoch 1.
    diverged = convbench(
        "train",
        *common,
        "trainer.epochs=3",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=1e12",
        f"hydra.run.dir={failed}",
        cwd=tmp_path,
    )
    assert diverged.code == 4, diverged.stderr
    # Stopped by a real SIGTERM at step 3 of epoch 1, sent by its model to this process.
    interrupted = convbench(
        "train",
        *TRUSTED,
        "model=stopsitself",
        "model.stop_at_step=3",
        f"model.stop_file={tmp_path / 'stop-sent'}",
        *common,
        "trainer.epochs=3",
        f"hydra.run.dir={stopped}",
        cwd=tmp_path,
    )
    assert interrupted.code == 3, interrupted

    listing = convbench("runs", "--json", str(outputs), cwd=tmp_path)
    assert listing.code == 0, listing.stderr
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in json.loads(listing.stdout)}
    assert rows["finished"]["status"] == "finished" and rows["finished"]["test_acc"] is not None
    assert rows["failed"]["status"] == "failed" and "epoch 2" in rows["failed"]["error"]
    assert rows["failed"]["test_acc"] is None and rows["failed"]["epoch"] == 1
    assert rows["stopped"]["status"] == "interrupted" and rows["stopped"]["test_acc"] is None
    table = convbench("runs", str(outputs), cwd=tmp_path).stdout
    assert "failed" in table and "interrupted" in table and "finished" in table

    # eval needs only the folder, whatever became of the run.
    report = convbench("eval", str(failed), *TRUSTED, "--json", "--device", "cpu", cwd=tmp_path)
    assert report.code == 0, report.stderr
    assert 0 <= json.loads(report.stdout)["test_acc"] <= 1
    # The interrupted run stopped inside epoch 1 (no best.pt yet): its last.pt is evaluated. Its
    # model is the tests' StopsItself, vouched for by the tests' config folder (TRUSTED).
    assert load_checkpoint(stopped / "checkpoints" / "last.pt")["state"]["step"] > 0
    report = convbench(
        "eval",
        str(stopped),
        *TRUSTED,
        "--checkpoint",
        "last",
        "--json",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert report.code == 0, report.stderr
    assert 0 <= json.loads(report.stdout)["test_acc"] <= 1
