"""One job of `convbench train`: what runs inside Hydra's task function, in the process that
trains (convbench.launch.app imports this module when a job starts, so that a mistake in the
config is told before torch is imported).

A single run is checked before its folder is made (convbench.launch.callback); a sweep's job
checks its own values here, shares the machine with the jobs beside it, and continues from its
checkpoint when the sweep is run again into its folder. A job that fails is recorded in its
folder's status.json, where the sweep reads it back.
"""

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from convbench.config.compose import describe_config_error
from convbench.config.trust import Trust
from convbench.errors import ConvbenchError, RunInterrupted, RunInUse, TrialPruned
from convbench.launch.distributed import share_the_machine, train_on_devices
from convbench.launch.preflight import preflight
from convbench.launch.sweeps import one_line
from convbench.run.folder import RunFolder, shown_path
from convbench.run.lifecycle import resume as resume_run
from convbench.run.lifecycle import train as train_run
from convbench.run.ranks import place

log = logging.getLogger("convbench")


def run(cfg, arguments: list[str], outcome) -> dict:
    """One job: train in the folder Hydra made for it; a sweep's job that already has a
    checkpoint there continues from it (a sweep run again into its own folder). A single run's
    failure goes to `outcome` (convbench.launch.app.TrainOutcome) instead of Hydra."""

    hydra_cfg = HydraConfig.get()
    folder = RunFolder(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        metrics = _run_job(cfg, folder, sweeping=sweeping, arguments=arguments)
        outcome.metrics[str(folder.path)] = metrics
        return metrics
    except RunInterrupted as stop:
        if sweeping:  # the whole sweep is what to resume
            stop.run_dir = shown_path(Path(hydra_cfg.sweep.dir))
        raise
    except TrialPruned as pruned:  # a result, recorded as "pruned" by the run itself
        if not sweeping:
            outcome.single_run_failure = pruned
            return {}
        raise
    except Exception as exc:
        if not isinstance(exc, RunInUse):  # the holder's status.json is not ours to write
            _record_failure(folder, exc)
        if not sweeping:
            outcome.single_run_failure = exc
            return {}
        _log_job_failure(hydra_cfg.job.num, exc)
        raise


def _run_job(cfg, folder, *, sweeping: bool, arguments: list[str]) -> dict:

    try:
        if sweeping:  # a single run was checked before its folder was made
            share_the_machine(cfg)
            preflight(cfg)
            if folder.last.is_file():
                # The job's own config (composed from the sweep's command line) says which
                # code its checkpoint may name.
                return resume_run(folder, Trust.of_config(cfg))
        if cfg.trainer.devices > 1 and not place().is_distributed:
            train_on_devices(cfg.trainer.devices, folder.path, arguments)
        return train_run(cfg, folder)
    except (HydraException, OmegaConfBaseException) as exc:  # a value that cannot resolve
        raise ConvbenchError(describe_config_error(exc)) from None


def _record_failure(folder, exc: Exception) -> None:
    if (folder.status() or {}).get("status") != "failed":
        folder.record_status("failed", error=str(exc))


def _log_job_failure(number, exc: Exception) -> None:

    if isinstance(exc, ConvbenchError):
        log.error("job %s failed: %s", number, one_line(str(exc)))
    else:  # a bug: its traceback goes to the job's train.log
        log.exception("job %s failed with a bug", number)
