"""convbench's Hydra callback (conf/config.yaml, `hydra.callbacks`): what must happen in the
process that launches runs, before their folders exist.

- Before a single run: `preflight` (ranges, the model, the schedule), so a mistake leaves no
  run folder behind.
- Before a sweep: the settings' ranges of the values shared by every job (a swept value is
  checked by its own job).
- As a sweep's job starts: a line naming it by what the sweep varies (`job 2: model=lenet
  seed=0`), in place of the launcher's list of every override typed (conf/hydra/hydra_logging).

Hydra turns an `Exception` raised by a callback into a warning (and goes on to run), so what
the checks raise travels as `ConfigRejected`, a BaseException that `convbench train` unwraps:
a `ConvbenchError` is reported as one paragraph, anything else as the bug it is.
"""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode

from convbench.config.schema import check_ranges
from convbench.errors import ConvbenchError
from convbench.launch.app import ConfigRejected
from convbench.launch.preflight import preflight
from convbench.run.folder import RunFolder, shown_path
from convbench.run.lifecycle import swept_keys
from convbench.run.ranks import place

log = logging.getLogger("convbench")


class ConvbenchCallback(Callback):
    def on_run_start(self, config, **kwargs) -> None:

        try:
            if place().is_main:  # another rank's folder is rank 0's, which may be writing it
                _refuse_a_used_folder(Path(str(config.hydra.run.dir)))
            preflight(config)
        except Exception as error:  # a bug too: Hydra would only warn about it
            raise ConfigRejected(error) from None

    def on_job_start(self, config, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        swept = swept_keys(RunFolder(Path(config.hydra.runtime.output_dir)))
        typed = {o.split("=", 1)[0].lstrip("+~"): o for o in config.hydra.overrides.task}
        shown = " ".join(typed[key] for key in swept if key in typed)
        log.info("\njob %s: %s", config.hydra.job.num, shown or "the sweep's settings")

    def on_multirun_start(self, config, **kwargs) -> None:

        try:
            check_ranges(config)
        except ValueError as exc:
            raise ConfigRejected(ConvbenchError(str(exc))) from None


def _refuse_a_used_folder(run_dir: Path) -> None:
    """A new run never writes into a folder that already holds one (hydra.run.dir=...), nor
    into a folder of the user's own files: its checkpoints, metrics.json and .hydra/ would
    overwrite or mix with what is there. A folder holding only what Hydra itself writes before
    a run (.hydra/, train.log: the processes of trainer.devices=N start in the folder their
    launcher made) is the run's own."""
    folder = RunFolder(run_dir)
    if folder.status_file.is_file():
        raise ConvbenchError(
            f"{run_dir} already holds a run. Continue it with `convbench resume "
            f"{shown_path(run_dir)}`, or "
            "give the new run a folder of its own (leave hydra.run.dir out: every run gets a new "
            "folder)."
        )
    hydras_own = {folder.hydra_dir.name, folder.log_file.name}
    others = (
        sorted(p.name for p in run_dir.iterdir() if p.name not in hydras_own)
        if (run_dir.is_dir())
        else []
    )
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ConvbenchError(
            f"hydra.run.dir={run_dir} is a folder with files of its own ({shown}): a run "
            "writes its config, checkpoints, metrics.json and TensorBoard files there and "
            "would overwrite or mix with them. Give the run an empty or new folder (or leave "
            "hydra.run.dir out: every run gets a new folder)."
        )
