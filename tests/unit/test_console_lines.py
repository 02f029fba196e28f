"""What a run prints when its output is not a terminal (a pipe, a CI log, a SLURM file): one plain
line per epoch and no progress bar, the same lines in train.log, and nothing at all with -q.
Runs in this process (helpers.inprocess), whose captured output is no terminal; a real terminal
is in tests/process/test_console.py."""

from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.inprocess import convbench


def test_plain_lines_when_not_a_terminal_and_log_file(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train", *tiny_mnist_overrides(mnist_root), ONE_THREAD, f"hydra.run.dir={run_dir}"
    )
    assert result.code == 0, result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "\r" not in result.stdout  # no progress bar in a pipe
    log = (run_dir / "train.log").read_text()
    assert log.count("] epoch ") == 2 and "done: test acc" in log


def test_quiet_prints_only_the_result_and_keeps_the_log(mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    result = convbench(
        "train",
        "-q",
        *tiny_mnist_overrides(mnist_root),
        "trainer.epochs=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()  # the result line alone, its run folder as typed from here
    assert len(lines) == 1 and lines[0].startswith("done: test acc"), lines
    assert lines[0].endswith(" | run"), lines
    assert "epoch 1/1" in (run_dir / "train.log").read_text()
