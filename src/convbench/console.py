"""Progress display: a rich progress bar on a terminal, nothing per step otherwise.

Per-epoch lines go through `logging` (console and the run's train.log) either way, so CI logs,
files and SLURM logs get one plain line per epoch.
"""

import logging
import sys
from contextlib import contextmanager
from pathlib import Path


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
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

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
def log_to_run_folder(run_dir: Path):
    """For commands outside Hydra (resume): the console and <run>/train.log, as Hydra sets up."""
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if run_dir.is_dir():
        to_file = logging.FileHandler(run_dir / "train.log")  # appends
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
