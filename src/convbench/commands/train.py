"""`convbench train OVERRIDES... [-m]`: a real Hydra application.

The `@hydra.main` entry point runs with the user's arguments, so multirun goes through Hydra's
own launcher and sweeper and every Hydra flag (`--cfg`, `--info`, `--config-dir`, launchers,
sweepers) works. Hydra is told to raise instead of printing (HYDRA_FULL_ERROR), and
configuration errors become one-paragraph `ConvbenchError`s, with the valid choices and a close
match for a typo.

A sweep runs every job; a job that fails is recorded in its folder (status.json). At the end the
failed jobs are read back from the jobs' folders (convbench.sweeps), which works whichever
launcher ran them, listed, and the exit code is EXIT_FAILED_JOBS.
"""

import logging
import os
import sys
from pathlib import Path

import typer

from convbench.errors import EXIT_FAILED_JOBS, ConvbenchError

log = logging.getLogger("convbench")

QUIET_FLAGS = ("-q", "--quiet")
# The exception of a single (not multirun) job, handed from the task back to `run_hydra` in the
# same process: returned to Hydra instead, it would print its own "Error executing job" line
# ahead of our paragraph.
_single_run_failure: list[Exception] = []
QUIET_OVERRIDES = ["trainer.progress=false", "++hydra.job_logging.handlers.console.level=WARNING"]


def train(ctx: typer.Context) -> None:
    """Train a model. Arguments are Hydra overrides: model=resnet dataset=cifar10 optimizer.lr=0.1,
    -m for a sweep, --cfg job to print the config, --help for every group and key."""
    raise typer.Exit(run_hydra(with_quiet_overrides(ctx.args)))


def with_quiet_overrides(args: list[str]) -> list[str]:
    """`-q/--quiet`: no progress bar, only warnings and errors on the console; train.log in the
    run folder still gets every line."""
    rest = [arg for arg in args if arg not in QUIET_FLAGS]
    return rest + QUIET_OVERRIDES if len(rest) < len(args) else rest


def run_hydra(overrides: list[str]) -> int:
    """Run `convbench train OVERRIDES...`; returns the process exit code."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from convbench import config
    from convbench.compose import describe_config_error
    from convbench.distributed import leave
    from convbench.files import write_failed
    from convbench.hydra_callback import ConfigRejected, ConvbenchCallback
    from convbench.paths import config_dir
    from convbench.sweeps import failed_jobs, is_job_failure

    config.register()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # we print errors ourselves, without Hydra's wording
    overrides = _one_folder_for_all_ranks(overrides)
    sys.argv = ["convbench train", *overrides]
    entry = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    ConvbenchCallback.sweep_dirs.clear()
    _single_run_failure.clear()
    try:
        entry(_task)()
    except ConfigRejected as rejected:  # by the preflight checks, before any run folder
        error = rejected.error
        if isinstance(
            error, HydraException | OmegaConfBaseException
        ):  # a value that cannot resolve
            raise ConvbenchError(describe_config_error(error, overrides)) from None
        raise error from None
    except (HydraException, OmegaConfBaseException) as exc:  # composing failed: no job ran
        raise ConvbenchError(describe_config_error(exc, overrides)) from None
    except OSError as exc:  # Hydra could not write a run folder's .hydra/ or train.log
        where = Path(exc.filename or "outputs")
        raise write_failed(
            "the run folder's files, at", where, exc, "Nothing was trained."
        ) from None
    except Exception as exc:
        if not is_job_failure(exc, failed_jobs(ConvbenchCallback.sweep_dirs)):
            raise  # not a job's failure: a bug around the sweep
    if _single_run_failure:  # its peers may never reach leave()'s barrier
        raise _single_run_failure.pop()
    leave()
    failed = failed_jobs(ConvbenchCallback.sweep_dirs)
    if failed:
        typer.echo(f"{len(failed)} job(s) of the sweep failed:", err=True)
        for job in failed:
            error = job["error"] or "no message"
            typer.echo(f"  job {job['num']} ({job['run_dir']}): {error}", err=True)
        return EXIT_FAILED_JOBS
    return 0


def _one_folder_for_all_ranks(overrides: list[str]) -> list[str]:
    """In a distributed run (torchrun), every process runs this command; they must share one
    run folder, and only rank 0 may write it. Rank 0 chooses the folder (hydra.run.dir as it
    resolves, unless the command line gives it) and tells the others, which write no .hydra/
    and no train.log. Outside torchrun: the overrides unchanged."""
    from convbench.compose import quoted
    from convbench.distributed import broadcast_text, join, place

    here = place()
    if not here.is_distributed:
        return overrides
    if any(arg in ("-m", "--multirun") for arg in overrides):
        raise ConvbenchError(
            "a sweep (-m) cannot run inside torchrun: start the sweep as usual and give each "
            "job several processes with trainer.devices=N, or use a launcher "
            "(hydra/launcher=submitit_slurm with one task per process)."
        )
    join(here)
    if not any(arg.startswith("hydra.run.dir=") for arg in overrides):
        folder = broadcast_text(_resolved_run_dir(overrides) if here.is_main else None, here)
        if not folder:  # rank 0 could not compose the config: it reports why
            raise ConvbenchError("rank 0 could not compose the run's config; see its message.")
        overrides = [*overrides, f"hydra.run.dir={quoted(folder)}"]
    if here.is_main:
        return overrides
    # The other ranks log nothing: no .hydra/, no train.log, and no console handler to tune.
    own = [arg for arg in overrides if "hydra.job_logging" not in arg]
    return [
        *own,
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]


def _resolved_run_dir(overrides: list[str]) -> str:
    """hydra.run.dir as `convbench train OVERRIDES` would resolve it ("" when it cannot)."""
    from convbench.compose import compose

    flags = [arg for arg in overrides if not arg.startswith("-")]
    try:
        return str(compose(flags, with_hydra=True).hydra.run.dir)
    except Exception:  # the real composition, next, reports the mistake in full
        return ""


def _task(cfg) -> dict:
    """One job: train in the folder Hydra made for it; a sweep's job that already has a
    checkpoint there continues from it (a sweep run again into its own folder)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from convbench.errors import RunInterrupted, RunInUse

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return _run_job(cfg, run_dir, sweeping)
    except RunInterrupted as stop:
        if sweeping:  # the whole sweep is what to resume
            stop.run_dir = str(Path(hydra_cfg.sweep.dir).resolve())
        raise
    except Exception as exc:
        if not isinstance(exc, RunInUse):  # the holder's status.json is not ours to write
            _record_failure(run_dir, exc)
        if not sweeping:
            _single_run_failure.append(exc)
            return {}
        _log_job_failure(hydra_cfg.job.num, exc)
        raise


def _run_job(cfg, run_dir: Path, sweeping: bool) -> dict:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from convbench.compose import describe_config_error
    from convbench.distributed import place
    from convbench.lifecycle import resume as resume_run
    from convbench.lifecycle import train as train_run
    from convbench.preflight import preflight
    from convbench.trust import Trust

    try:
        if sweeping:  # a single run was checked before its folder was made
            _share_the_machine(cfg)
            preflight(cfg)
            if (run_dir / "checkpoints" / "last.pt").is_file():
                # The job's own config (composed from the sweep's command line) says which
                # code its checkpoint may name.
                return resume_run(run_dir, Trust.of_config(cfg))
        if cfg.trainer.devices > 1 and not place().is_distributed:
            _train_on_devices(cfg.trainer.devices, run_dir)
        return train_run(cfg, run_dir)
    except (HydraException, OmegaConfBaseException) as exc:  # a value that cannot resolve
        raise ConvbenchError(describe_config_error(exc)) from None


def _share_the_machine(cfg) -> None:
    """Jobs the joblib launcher runs side by side on one machine: unless trainer.num_threads
    says otherwise, each takes an equal part of the cores (torch's default would give every
    job all of them, and they would fight over them); with several GPUs, job k takes GPU
    k mod their number."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    if "joblib" not in str(hydra_cfg.launcher.get("_target_", "")).lower():
        return
    import torch

    cores = os.cpu_count() or 1
    jobs = int(hydra_cfg.launcher.get("n_jobs") or -1)
    side_by_side = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 = every core
    if cfg.trainer.num_threads is None:
        torch.set_num_threads(max(1, cores // side_by_side))
    log.info(
        "job %s: %d torch thread(s), %d job(s) side by side on %d cores",
        hydra_cfg.job.num,
        torch.get_num_threads(),
        side_by_side,
        cores,
    )
    if torch.cuda.device_count() > 1:
        torch.cuda.set_device(hydra_cfg.job.num % torch.cuda.device_count())


def _train_on_devices(devices: int, run_dir: Path) -> None:
    """trainer.devices=N: the run's N processes, started by torch's elastic launcher, train it
    in the folder Hydra just made; this process waits and exits with their exit code."""
    from convbench.compose import quoted
    from convbench.distributed import launch_local

    arguments = [arg for arg in sys.argv[1:] if not arg.startswith("hydra.run.dir=")]
    code = launch_local(devices, ["train", *arguments, f"hydra.run.dir={quoted(str(run_dir))}"])
    raise SystemExit(code)


def _record_failure(run_dir: Path, exc: Exception) -> None:
    from convbench.runfolder import STATUS_FILE, read_json, record_status

    if (read_json(run_dir / STATUS_FILE) or {}).get("status") != "failed":
        record_status(run_dir, "failed", error=str(exc))


def _log_job_failure(number, exc: Exception) -> None:
    from convbench.sweeps import one_line

    if isinstance(exc, ConvbenchError):
        log.error("job %s failed: %s", number, one_line(str(exc)))
    else:  # a bug: its traceback goes to the job's train.log
        log.exception("job %s failed with a bug", number)
