"""The console in a real pseudo-terminal, as a person sees it: a live progress bar while an epoch
trains, then one clean line per epoch (the bar never swallows a log line). Off a terminal, the lines are
tested in this process in tests/unit/test_console_lines.py."""

import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from helpers.cli import ONE_THREAD, TRUSTED, slow_overrides, tiny_mnist_overrides
from helpers.fakedata import write_idx_dataset
from helpers.terminal import Terminal

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)  train loss [\d.]+ acc [\d.]+ \| val loss")


@pytest.fixture
def short_tmp():
    """A folder with a short absolute path: the run folder is printed whole, and a line longer
    than the terminal would wrap."""
    folder = Path(tempfile.mkdtemp(prefix="cb-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def epoch_lines(screen: list[str]) -> list[str]:
    """Lines that hold an epoch's summary, wherever it starts on the line."""
    return [line for line in screen if "train loss" in line]


def test_every_epoch_line_starts_its_own_line_under_the_bar(short_tmp):
    tmp_path = short_tmp
    root = write_idx_dataset(tmp_path / "data", train=2100, test=200)  # a bar worth drawing
    terminal = Terminal(
        "train",
        *tiny_mnist_overrides(root),
        "trainer.epochs=3",
        ONE_THREAD,
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert terminal.wait() == 0, terminal.screen()
    assert "━" in terminal.output.decode(errors="replace"), "a bar was drawn on the terminal"
    screen = terminal.screen()
    lines = epoch_lines(screen)
    assert [EPOCH_LINE.match(line)[1] for line in lines if EPOCH_LINE.match(line)] == [
        "1",
        "2",
        "3",
    ], screen
    assert len(lines) == 3, screen
    assert screen[-1].startswith("done: test acc"), screen
    assert not any("━" in line for line in screen), "the bar is gone once the run ends"


def test_a_stop_and_a_resume_keep_their_lines_apart_from_the_bar(short_tmp):
    tmp_path = short_tmp
    root = write_idx_dataset(tmp_path / "data", train=1100, test=100)
    run_dir = tmp_path / "run"
    terminal = Terminal("train", *slow_overrides(root, "run", epochs=2), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert time.monotonic() < deadline and terminal.process.poll() is None
        terminal.read()
    terminal.read(0.5)
    terminal.process.send_signal(signal.SIGTERM)
    assert terminal.wait() == 3
    stopped = terminal.screen()
    assert any(line.startswith("SIGTERM received") for line in stopped), stopped
    assert any(line.startswith("stopped by SIGTERM at epoch 1") for line in stopped), stopped

    resumed = Terminal("resume", "run", *TRUSTED, cwd=tmp_path)
    assert resumed.wait() == 0, resumed.screen()
    screen = resumed.screen()
    assert any(line.startswith("resuming run at epoch 1, step") for line in screen), screen
    assert [line[:10] for line in epoch_lines(screen)] == ["epoch 1/2 ", "epoch 2/2 "], screen
    assert all(EPOCH_LINE.match(line) for line in epoch_lines(screen)), screen
