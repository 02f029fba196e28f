"""`convbench train` end to end, in this process (helpers.inprocess), on tiny generated data in
the real formats: the run folder it leaves (README, "The run folder"), a folder that already
holds a run refused, and a finished run that `resume` leaves as it is."""

import hashlib
import json
from pathlib import Path

import yaml

from helpers.cli import TRUSTED, tiny_mnist_overrides
from helpers.inprocess import convbench
from helpers.runfolders import assert_complete_run


def test_train_writes_a_complete_run_folder(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train", *tiny_mnist_overrides(mnist_root), f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.code == 0, result.stderr
    metrics = assert_complete_run(run_dir, epochs=2)
    assert metrics["test_acc"] > 0.2, "the fixture is learnable: 16 steps must beat chance (0.1)"
    last_line = result.stdout.strip().splitlines()[-1]
    assert "test acc" in last_line and "best val acc" in last_line
    assert last_line.endswith(" | run"), "the run folder, relative to where the command ran"
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.epochs=2" in overrides
    assert (run_dir / "train.log").read_text().count("epoch ") >= 2


def test_cifar_format_trains_end_to_end(cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        "dataset=cifar10",
        f"dataset.root={cifar_root}",
        "dataset.val_size=50",
        "trainer.epochs=1",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert_complete_run(run_dir, epochs=1)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content's hash and its modification time."""
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_train_into_a_folder_holding_a_run_is_refused(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        convbench(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).code
        == 0
    )
    before = snapshot(run_dir)
    again = convbench(
        "train", *tiny_mnist_overrides(mnist_root), f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert again.code == 2 and "already holds a run" in again.stderr
    assert f"convbench resume {run_dir.relative_to(tmp_path)}" in again.stderr
    assert snapshot(run_dir) == before


def test_resuming_a_finished_run_changes_nothing_and_exits_0(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        convbench(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).code
        == 0
    )
    before = snapshot(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for _ in range(2):  # a requeue script may call it any number of times
        result = convbench("resume", str(run_dir), *TRUSTED, cwd=tmp_path)
        assert result.code == 0, result.stderr
        assert "already finished all 1 epochs" in result.stdout
        assert f"test acc {metrics['test_acc']:.4f}" in result.stdout
    assert snapshot(run_dir) == before, "byte-identical files, same listing, same times"
