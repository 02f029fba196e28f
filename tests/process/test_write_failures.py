"""Real write failures from the operating system: a file-size limit (RLIMIT_FSIZE, what
`ulimit -f` sets, here applied to the running process), a full tmpfs and a read-only one. Each
ends the command with exit 5 and one paragraph naming the file and the free space, keeps the
previous checkpoints loadable, leaves no temporary file, and a resume afterwards finishes the
run."""

import json
import shutil
import signal
import subprocess
from pathlib import Path

from convbench.errors import EXIT_WRITE_FAILED
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
from helpers.inprocess import convbench
from helpers.limits import ignore_sigxfsz, limit_file_size, small_tmpfs
from helpers.runfolders import stopped_folder_run

TMP_MARK = ".tmp-"


def no_temporary_files(run_dir: Path) -> bool:
    return not [path for path in run_dir.rglob("*") if TMP_MARK in path.name]


def one_paragraph(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def saved_step(path: Path) -> int:
    return load_checkpoint(path)["state"]["step"]


def last_pt_written(run_dir: Path, epoch: int | None = None):
    """A condition: last.pt exists (and, with `epoch`, holds that many finished epochs)."""
    last = run_dir / "checkpoints" / "last.pt"

    def written() -> bool:
        if not last.is_file():
            return False
        try:
            state = load_checkpoint(last)["state"]
        except Exception:  # replaced while being read: look again
            return False
        return epoch is None or state["epoch"] >= epoch

    return written


def test_a_checkpoint_over_the_file_size_limit(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *slow_overrides(mnist_root, run_dir),
        "trainer.log_every_n_steps=0",
        "trainer.log_images=false",
    ]
    proc = start("train", *overrides, cwd=tmp_path, preexec_fn=ignore_sigxfsz)
    wait_until(last_pt_written(run_dir), proc, "the first checkpoint")
    before = saved_step(run_dir / "checkpoints" / "last.pt")
    # Smaller than a checkpoint (~0.5 MB), larger than status.json and the event file so far.
    limit_file_size(proc.pid, 50_000)
    output = finish(proc, expected=EXIT_WRITE_FAILED)
    message = one_paragraph(output)
    last = run_dir / "checkpoints" / "last.pt"
    assert f"could not write the checkpoint {last}" in message
    assert "File too large (EFBIG)" in message and "50,000 bytes (ulimit -f)" in message
    assert "free there" in message and "previous checkpoints are intact" in message
    kept = saved_step(last)
    assert kept >= before and f"step {kept})" in message
    assert no_temporary_files(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "EFBIG" in status["error"]
    finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))  # no limit now: it finishes
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_a_full_tmpfs_at_the_first_checkpoint(mnist_root):
    with small_tmpfs(3) as disk:
        run_dir = disk / "run"
        # The MLP's checkpoint (weights and momentum, ~4.3 MB) cannot fit in 3 MB.
        result = run_cli(
            "train",
            "model=mlp",
            *tiny_mnist_overrides(mnist_root),
            f"hydra.run.dir={run_dir}",
            cwd=disk,
        )
        assert result.returncode == EXIT_WRITE_FAILED, result.stderr
        message = one_paragraph(result.stderr)
        assert f"could not write the checkpoint {run_dir / 'checkpoints' / 'last.pt'}" in message
        assert "No space left on device (ENOSPC)" in message and "MB free there" in message
        assert "No checkpoint had been saved yet" in message
        assert not list((run_dir / "checkpoints").iterdir()), "nothing half-written is left"
        assert no_temporary_files(run_dir)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "failed" and "ENOSPC" in status["error"]


def test_the_tensorboard_event_file_over_the_file_size_limit(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*slow_overrides(mnist_root, run_dir), "trainer.checkpoint_every_n_steps=0"]
    proc = start("train", *overrides, cwd=tmp_path, preexec_fn=ignore_sigxfsz)
    wait_until(last_pt_written(run_dir, epoch=1), proc, "epoch 1's checkpoint")
    events = next(run_dir.glob("events.out.tfevents.*"))
    # Below the event file's size (images and curves of epoch 1), above status.json's.
    limit_file_size(proc.pid, 2_000)
    assert events.stat().st_size > 2_000
    message = one_paragraph(finish(proc, expected=EXIT_WRITE_FAILED))
    assert f"could not write TensorBoard's event file {events}" in message
    assert (
        "File too large (EFBIG)" in message and "checkpoints written before are intact" in message
    )
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["epoch"] == 1
    assert no_temporary_files(run_dir)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def test_metrics_json_over_the_file_size_limit_then_resume_writes_it(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    # Testing takes a while (a slow evaluation), so the limit lands between the last checkpoint
    # and metrics.json; no TensorBoard images at the end, so metrics.json is the first write.
    overrides = [
        *slow_overrides(mnist_root, run_dir, epochs=1),
        "trainer.log_images=false",
        "+model.seconds_per_eval_batch=1.0",
    ]
    proc = start("train", *overrides, cwd=tmp_path, preexec_fn=ignore_sigxfsz)
    wait_until(last_pt_written(run_dir, epoch=1), proc, "the final checkpoint")
    limit_file_size(proc.pid, 100)
    message = one_paragraph(finish(proc, expected=EXIT_WRITE_FAILED))
    assert f"could not write the final metrics {run_dir / 'metrics.json'}" in message
    assert "EFBIG" in message and "a resume tests best.pt again" in message
    assert not (run_dir / "metrics.json").exists() and no_temporary_files(run_dir)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["state"]["epoch"] == 1
    output = finish(start("resume", str(run_dir), *TRUSTED, cwd=tmp_path))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and f"test acc {metrics['test_acc']:.4f}" in output
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


def test_a_stop_signal_still_works_after_nothing_went_wrong(mnist_root, tmp_path):
    """The SIGXFSZ-ignoring set-up itself changes nothing: a run stopped by SIGTERM exits 3."""
    run_dir = tmp_path / "run"
    proc = start(
        "train", *slow_overrides(mnist_root, run_dir), cwd=tmp_path, preexec_fn=ignore_sigxfsz
    )
    wait_until(last_pt_written(run_dir), proc, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    finish(proc, expected=3)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("train.log", ".convbench.lock")
    }


def test_resume_on_a_read_only_file_system_is_a_write_failure(tmp_path):
    """A run stopped before its test (helpers.runfolders), copied to a tmpfs remounted
    read-only: `convbench resume` (in this process) is refused as a write failure, nothing
    changed."""
    run, _ = stopped_folder_run(tmp_path)
    with small_tmpfs(20) as mount:
        shutil.copytree(run, mount / "run")
        before = snapshot(mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        result = convbench("resume", str(mount / "run"))
        assert result.code == EXIT_WRITE_FAILED, result
        assert "Traceback" not in result.stderr and "This is a bug" not in result.stderr, result
        assert "Read-only file system" in result.stderr
        assert snapshot(mount / "run") == before
