"""convbench's Hydra callback (conf/config.yaml, `hydra.callbacks`): what must happen in the
process that launches runs, before their folders exist.

- Before a single run: `preflight` (ranges, the model, the schedule), so a mistake leaves no
  run folder behind.
- Before a sweep: the settings' ranges of the values shared by every job (a swept value is
  checked by its own job).

Hydra turns an `Exception` raised by a callback into a warning (and goes on to run), so what
the checks raise travels as `ConfigRejected`, a BaseException that `convbench train` unwraps:
a `ConvbenchError` is reported as one paragraph, anything else as the bug it is.
"""

from pathlib import Path

from hydra.experimental.callback import Callback

from convbench.errors import ConvbenchError


class ConfigRejected(BaseException):
    """Carries what the checks raised (a `ConvbenchError`, or a bug's own exception) past
    Hydra's callback runner to `convbench train`, which raises it again."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class ConvbenchCallback(Callback):
    def on_run_start(self, config, **kwargs) -> None:
        from convbench.launch.preflight import preflight
        from convbench.run.ranks import place

        try:
            if place().is_main:  # another rank's folder is rank 0's, which may be writing it
                _refuse_a_used_folder(Path(str(config.hydra.run.dir)))
            preflight(config)
        except Exception as error:  # a bug too: Hydra would only warn about it
            raise ConfigRejected(error) from None

    def on_multirun_start(self, config, **kwargs) -> None:
        from convbench.config.schema import check_ranges

        try:
            check_ranges(config)
        except ValueError as exc:
            raise ConfigRejected(ConvbenchError(str(exc))) from None


def _refuse_a_used_folder(run_dir: Path) -> None:
    """A new run never writes into a folder that already holds one (hydra.run.dir=...): its
    checkpoints and curves would be overwritten or mixed."""
    from convbench.run.folder import STATUS_FILE

    if (run_dir / STATUS_FILE).is_file():
        raise ConvbenchError(
            f"{run_dir} already holds a run. Continue it with `convbench resume {run_dir}`, or "
            "give the new run a folder of its own (leave hydra.run.dir out: every run gets a new "
            "folder)."
        )
