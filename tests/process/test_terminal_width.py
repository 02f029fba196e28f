"""What a person sees in a terminal 80 and 120 columns wide (a VT100 emulator on a real
pseudo-terminal): no line of `train`, `runs`, `summary` or `compare` is wider than the terminal,
and the run folder a run prints appears whole on one screen line, a path the other commands
accept."""

import shutil
import tempfile
from pathlib import Path

import pytest

from helpers.cli import ONE_THREAD, tiny_mnist_overrides
from helpers.fakedata import write_idx_dataset
from helpers.terminal import Terminal

WIDTHS = (80, 120)


@pytest.fixture(scope="module")
def place():
    """A folder with a long-ish absolute path, as a user's would be, holding the data."""
    folder = Path(tempfile.mkdtemp(prefix="convbench-terminal-width-"))
    root = write_idx_dataset(folder / "data", train=1100, test=200)
    yield folder, root
    shutil.rmtree(folder, ignore_errors=True)


def run_in_terminal(*args: str, cwd: Path, cols: int) -> Terminal:
    terminal = Terminal(*args, cwd=cwd, cols=cols, rows=100)
    assert terminal.wait() == 0, "\n".join(terminal.screen())
    return terminal


def assert_fits(terminal: Terminal, cols: int) -> None:
    wide = [line for line in terminal.logical_lines() if len(line) > cols]
    assert not wide, f"{len(wide)} line(s) wider than {cols} columns:\n" + "\n".join(wide)


def run_folder(terminal: Terminal) -> str:
    """The run folder the header names, as it stands on one screen line."""
    found = [line for line in terminal.screen() if line.startswith("run folder: ")]
    assert len(found) == 1, terminal.screen()
    return found[0].removeprefix("run folder: ").strip()


@pytest.fixture(scope="module")
def trained(place):
    """A single run and a two-job sweep, each trained in a terminal of each width."""
    folder, root = place
    runs = {}
    for cols in WIDTHS:
        overrides = [
            *tiny_mnist_overrides(root),
            ONE_THREAD,
            "model=resnet",
            "dataset.train_limit=256",
        ]
        single = run_in_terminal("train", *overrides, cwd=folder, cols=cols)
        sweep = run_in_terminal(
            "train", "-m", "model=mlp,lenet", *overrides[:-2], cwd=folder, cols=cols
        )
        runs[cols] = (single, sweep)
    return runs


@pytest.mark.parametrize("cols", WIDTHS)
def test_train_fits_and_prints_its_folder_whole(trained, place, cols):
    folder, _ = place
    single, sweep = trained[cols]
    for terminal in (single, sweep):
        assert_fits(terminal, cols)
    path = run_folder(single)
    assert (folder / path / ".hydra" / "config.yaml").is_file(), path
    text = "\n".join(single.screen())
    assert "epoch 2/2" in text and "done: test acc" in text, text
    ending = "\n".join(sweep.screen())
    assert "Next:" in ending and f"convbench compare {path.split('/')[0]}" in ending, ending


@pytest.mark.parametrize("cols", WIDTHS)
def test_runs_summary_and_compare_fit(trained, place, cols):
    folder, _ = place
    single, _ = trained[cols]
    commands = [
        ("runs", "outputs"),
        ("summary", "model=resnet", "model.depth=20"),
        ("summary", run_folder(single)),
        ("compare", "outputs"),
    ]
    for args in commands:
        terminal = run_in_terminal(*args, cwd=folder, cols=cols)
        assert_fits(terminal, cols)
        assert len(terminal.screen()) > 3, args  # it printed its table
    listing = run_in_terminal("runs", "outputs", cwd=folder, cols=cols)
    paths = [line.split()[-1] for line in listing.screen()[1:] if "outputs/" in line]
    assert len(paths) == 2 * len(WIDTHS) + len(WIDTHS) and all(
        (folder / path / "status.json").is_file() for path in paths
    ), paths
