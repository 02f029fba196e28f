"""The run's TensorBoard log: torch's SummaryWriter, with the operating system's refusals told
as `WriteFailed`.

SummaryWriter writes from a background thread; a failed write (a full disk, a file-size limit)
surfaces as an OSError at the next call. `EventLog` names the event file and the free space
instead, and after one failure stays silent, so the cleanup that follows does not fail twice.
"""

import threading
from collections.abc import Sequence
from pathlib import Path

from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from convbench.files import write_failed

KEPT = "The checkpoints written before are intact."


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread re-raises a failed write to end itself, after storing it for
    the next call to raise in the main thread; without this, threading would also print that
    traceback on stderr."""

    previous = threading.excepthook
    if getattr(previous, "convbench_quiet", False):
        return

    def hook(args) -> None:
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError):
            return  # reported where the writer is called next (EventLog._call)
        previous(args)

    hook.convbench_quiet = True
    threading.excepthook = hook


class SilentLog:
    """What a distributed run's other ranks get instead of an EventLog: they write nothing."""

    failed = False

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    add_image = add_images = add_text = add_histogram = add_graph = add_hparams = add_scalar

    def flush(self) -> None:
        pass

    close = flush


class EventLog:
    """SummaryWriter's methods that convbench uses, for the event files of `run_dir`."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):

        self.run_dir = Path(run_dir)
        self.failed = False
        _quiet_writer_threads()
        try:
            self._writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        except OSError as exc:
            raise write_failed(
                "TensorBoard's event file in", self.run_dir, exc, kept=KEPT
            ) from None

    @property
    def path(self) -> Path:
        """The event file this writer appends to."""
        event_writer = getattr(self._writer.file_writer, "event_writer", None)
        return Path(getattr(event_writer, "_file_name", self.run_dir))

    def _call(self, method: str, *args, **kwargs):
        if self.failed:
            return None
        try:
            target = self if method.startswith("_") else self._writer
            return getattr(target, method)(*args, **kwargs)
        except OSError as exc:
            self.failed = True
            raise write_failed("TensorBoard's event file", self.path, exc, kept=KEPT) from None

    def add_scalar(self, *args, **kwargs):
        return self._call("add_scalar", *args, **kwargs)

    def add_image(self, *args, **kwargs):
        return self._call("add_image", *args, **kwargs)

    def add_images(self, *args, **kwargs):
        return self._call("add_images", *args, **kwargs)

    def add_text(self, *args, **kwargs):
        return self._call("add_text", *args, **kwargs)

    def add_histogram(self, *args, **kwargs):
        return self._call("add_histogram", *args, **kwargs)

    def add_graph(self, *args, **kwargs):
        return self._call("add_graph", *args, **kwargs)

    def add_hparams(self, settings: dict, metrics: dict, *, lead: Sequence[str] = ()) -> None:
        """The run's `settings` and final `metrics` for the HParams view, in this event file.

        The keys in `lead` are marked as the ones that differ between runs. TensorBoard lists
        those first and shows five columns until asked for more: in a sweep, the swept keys,
        the seed and the model (torch's add_hparams marks none, so the first five by name show).
        """
        experiment, start, end = hparams_summaries(settings, metrics)
        leading = set(lead)
        data = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
        for info in data.experiment.hparam_infos:
            info.differs = info.name in leading
        experiment.value[0].metadata.plugin_data.content = data.SerializeToString()
        for summary in (experiment, start, end):
            self._call("_add_summary", summary)
        for name, value in metrics.items():
            self.add_scalar(name, value)

    def _add_summary(self, summary) -> None:
        self._writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
