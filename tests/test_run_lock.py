"""One run, one process: a run being trained holds an OS lock on its folder; a second process
on the same run exits 2 naming the holder; the kernel drops the lock when the holder dies, even
by SIGKILL; resuming a finished run changes nothing and exits 0."""

import hashlib
import json
import signal
import socket
from pathlib import Path

from helpers.cli import (
    TRUSTED,
    finish,
    run_cli,
    slow_overrides,
    start,
    tiny_mnist_overrides,
    wait_until,
)


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


def test_train_into_a_folder_holding_a_run_is_refused(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_cli(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    before = snapshot(run_dir)
    again = run_cli(
        "train", *tiny_mnist_overrides(mnist_root), f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert f"convbench resume {run_dir}" in again.stderr
    assert snapshot(run_dir) == before


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


def test_resuming_a_finished_run_changes_nothing_and_exits_0(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        run_cli(
            "train",
            *tiny_mnist_overrides(mnist_root),
            "trainer.epochs=1",
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    before = snapshot(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for _ in range(2):  # a requeue script may call it any number of times
        result = run_cli("resume", str(run_dir), *TRUSTED, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "already finished all 1 epochs" in result.stdout
        assert f"test acc {metrics['test_acc']:.4f}" in result.stdout
    assert snapshot(run_dir) == before, "byte-identical files, same listing, same times"
