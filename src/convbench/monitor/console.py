"""What a person sees while convbench works: a rich progress bar on a terminal, nothing per step
otherwise, and the log lines.

Output policy: a command's result (a table, a report, JSON) is printed by its module in
convbench.commands; everything said while working (the epoch lines, a download notice, a
warning) goes through `logging` under the "convbench" logger, so it reaches the console and the
run's train.log alike. CI logs, files and SLURM logs get one plain line per epoch.
"""

import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
)

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

    def format(self, record: logging.LogRecord) -> str:
        """The record's message; on a terminal narrower than it, its short form when the record
        has one (`extra={"short": ...}`: an epoch line without its learning rate, say)."""
        return fitted(super().format(record), getattr(record, "short", None))


def fitted(text: str, short: str | None) -> str:
    """`text`, or `short` when `text` is wider than the terminal that standard output is."""
    if short and sys.stdout.isatty() and len(text) > shutil.get_terminal_size().columns:
        return short
    return text


class NoProgress:
    """What a run off a terminal shows between its log lines: nothing."""

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        pass

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, images: int) -> None:
        pass

    def show(self, **metrics: float) -> None:
        pass

    def run_left(self, seconds: float) -> None:
        pass

    def phase(self, text: str):
        return contextlib.nullcontext()

    def stop(self) -> None:
        pass


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class BarProgress:
    """A transient bar per epoch: images done, images/s, the epoch's running loss and accuracy,
    the epoch's time left, the whole run's time left (once an epoch has shown its pace) and the
    time since the run started, each labelled; columns the terminal has no room for are left
    out. Between epochs the bar says what the run does (validating, drawing pictures)."""

    def __init__(self, width: int | None = None):

        width = width or shutil.get_terminal_size().columns
        columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=None)]
        if width >= 110:
            columns.append(MofNCompleteColumn())
        columns += [TextColumn("{task.fields[speed]}"), TextColumn("{task.fields[metrics]}")]
        columns += [TextColumn("{task.fields[times]}")]
        self._progress = Progress(*columns, transient=True, expand=False)
        self._wide = width >= 100
        self._task, self._run_left, self._started = None, None, time.monotonic()
        self._epoch_started = self._started

    def start_epoch(self, epoch: int, epochs: int, total: int) -> None:
        self.start(f"epoch {epoch}/{epochs}", total, part="epoch ")

    def start(self, label: str, total: int, *, part: str = "") -> None:
        """A new bar of `total` items (images) under `label`; its time left is that of `part`
        ("epoch ": the epoch's, beside the whole run's)."""
        self._part = part
        if self._task is None:
            self._progress.start()
        else:
            self._progress.remove_task(self._task)
        self._epoch_started = time.monotonic()
        self._label = label
        self._task = self._progress.add_task(
            self._label, total=total, metrics="", speed="", times=""
        )

    def advance(self, images: int) -> None:
        self._progress.advance(self._task, images)
        task = self._progress.tasks[-1]
        now = time.monotonic()
        left = task.time_remaining
        parts = [f"{self._part}{_clock(left)} left" if left is not None else ""]
        if self._run_left is not None:
            run_left = self._run_left - (now - self._epoch_started)
            parts.append(f"run ~{_clock(run_left)} left")
        if self._wide:
            parts.append(f"{_clock(now - self._started)} elapsed")
        speed = f"{task.speed:,.0f} img/s" if task.speed else ""
        self._progress.update(self._task, times="  ".join(p for p in parts if p), speed=speed)

    def show(self, **metrics: float) -> None:
        """Running epoch means, refreshed at the engine's sync points."""
        text = " ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        self._progress.update(self._task, metrics=text)

    def run_left(self, seconds: float) -> None:
        """The whole run's time left from the start of the next epoch (the engine's estimate)."""
        self._run_left = seconds

    @contextlib.contextmanager
    def phase(self, text: str):
        """The bar's label says what the run does meanwhile ("validating")."""
        if self._task is not None:
            self._progress.update(self._task, description=f"{self._label} {text}")
        try:
            yield
        finally:
            if self._task is not None:
                self._progress.update(self._task, description=self._label)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


def make_progress(enabled: bool | None = None):
    """A bar when stdout is a terminal (or `enabled` is True), else no per-step output."""
    if enabled is None:
        enabled = sys.stdout.isatty()
    return BarProgress() if enabled else NoProgress()


@contextlib.contextmanager
def status(text: str):
    """On a terminal, a transient line saying what convbench does while nothing else moves
    (loading data, testing); elsewhere nothing (the log lines say it)."""
    if not sys.stdout.isatty():
        yield
        return
    from rich.console import Console

    with Console().status(text, spinner="dots"):
        yield


@contextlib.contextmanager
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


@contextlib.contextmanager
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
