"""What a person sees while convbench works: a rich progress bar on a terminal, nothing per step
otherwise, and the log lines.

Output policy: a command's result (a table, a report, JSON) is printed by its module in
convbench.commands; everything said while working (the epoch lines, a download notice, a
warning) goes through `logging` under the "convbench" logger, so it reaches the console and the
run's train.log alike. CI logs, files and SLURM logs get one plain line per epoch.
"""

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from convbench.files import write_failed


class ConsoleHandler(logging.StreamHandler):
    """Log records to whatever `sys.stdout` is when each record is written.

    While a progress bar is live, rich swaps `sys.stdout` for a proxy that prints above the bar;
    a handler holding the original stream would write into the bar's line instead.
    """

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stdout


class NoProgress:
    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        pass

    def advance(self, images: int) -> None:
        pass

    def show(self, **metrics: float) -> None:
        pass

    def stop(self) -> None:
        pass


class BarProgress:
    """One transient bar per epoch with images/s and time left."""

    def __init__(self):

        class ImagesPerSecond(ProgressColumn):
            def render(self, task):
                return Text(f"{task.speed:,.0f} img/s" if task.speed else "")

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            ImagesPerSecond(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._task = None

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(f"epoch {epoch}/{epochs}", total=total, metrics="")

    def advance(self, images: int) -> None:
        self._progress.advance(self._task, images)

    def show(self, **metrics: float) -> None:
        """Running epoch means, refreshed at the engine's sync points."""
        text = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        self._progress.update(self._task, metrics=text)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


def make_progress(enabled: bool | None = None):
    """A bar when stdout is a terminal (or `enabled` is True), else no per-step output."""
    if enabled is None:
        enabled = sys.stdout.isatty()
    return BarProgress() if enabled else NoProgress()


@contextmanager
def log_to_run_folder(log_file: Path):
    """For commands outside Hydra (resume): the console and the run's train.log (`log_file`,
    appended to when its folder exists), as Hydra sets them up for `train`."""
    root = logging.getLogger()
    console = ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if log_file.parent.is_dir():
        try:
            to_file = logging.FileHandler(log_file)  # appends
        except OSError as exc:  # a read-only or full file system
            kept = "Nothing was written; the run's checkpoints are as they were."
            raise write_failed("the run's log", log_file, exc, kept=kept) from None
        to_file.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
        handlers.append(to_file)
    previous_level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)


@contextmanager
def log_to_console(stream=None):
    """For commands that print a result (eval): the "convbench" logger's notices on stderr, so
    that stdout holds the result alone (`--json` output stays parseable)."""
    logger = logging.getLogger("convbench")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
