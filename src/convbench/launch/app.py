"""`convbench train`'s Hydra application: a real `@hydra.main` entry point, so multirun goes
through Hydra's own launcher and sweeper and every Hydra flag (`--cfg`, `--info`,
`--config-dir`, launchers, sweepers) works.

`train(arguments)` runs it and returns a `TrainOutcome`; nothing is carried in globals. Hydra
reads its arguments from `sys.argv` and prints its own errors unless HYDRA_FULL_ERROR is set, so
both are set for the duration of the call and restored after (`_as_hydra_sees_it`). A sweep's
folder is decided before Hydra starts (`hydra.sweep.dir`, as the config resolves it), so the
outcome can say where the jobs are and which of them failed, read back from their folders
(convbench.launch.sweeps): that works whichever launcher ran them, on whichever machine.

Configuration errors become one-paragraph `ConvbenchError`s with the valid choices and a close
match for a typo (convbench.config.compose).
"""

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import yaml
from hydra._internal.hydra import Hydra
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from convbench.config import reference, schema
from convbench.config.compose import compose, config_dir, describe_config_error, quoted
from convbench.errors import EXIT_FAILED_JOBS, ConvbenchError
from convbench.files import write_failed
from convbench.launch.sweeps import failed_jobs, is_job_failure

log = logging.getLogger("convbench")

# Hydra flags that print something and run nothing: no folder is decided for them.
INSPECTING_FLAGS = {
    "--cfg",
    "-c",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--version",
}


@dataclass
class TrainOutcome:
    """What `convbench train` did: its exit code, and for a sweep its folder and failed jobs."""

    exit_code: int = 0
    sweep_dir: Path | None = None
    failed_jobs: list[dict] = field(default_factory=list)
    # A single run's failure, handed from the task back to `train` in the same process: given
    # to Hydra instead, it would print its own "Error executing job" line ahead of our paragraph.
    single_run_failure: Exception | None = None
    ran: bool = False  # a job ran in this process (not only composed, or printed by --cfg)
    metrics: dict = field(default_factory=dict)  # run folder -> its final metrics, run here


def train(arguments: list[str]) -> TrainOutcome:
    """Run `convbench train ARGUMENTS` (Hydra overrides and flags) to its end."""

    schema.register()
    reference.register()
    _refuse_null_groups(arguments)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: one folder for all
        from convbench.launch.distributed import one_folder_for_all_ranks

        arguments = one_folder_for_all_ranks(arguments)
    outcome = TrainOutcome(sweep_dir=_decided_sweep_dir(arguments))
    if outcome.sweep_dir is not None:
        arguments = [*arguments, f"hydra.sweep.dir={_quoted(str(outcome.sweep_dir))}"]
    entry = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
    task = entry(lambda cfg: _task(cfg, arguments, outcome))
    sweep_dirs = [outcome.sweep_dir] if outcome.sweep_dir else []
    try:
        with _as_hydra_sees_it(arguments), _mode_from_the_command_line(arguments):
            task()
    except ConfigRejected as rejected:  # by the preflight checks, before any run folder
        error = rejected.error
        if isinstance(error, HydraException | OmegaConfBaseException):  # cannot resolve
            raise ConvbenchError(describe_config_error(error, arguments)) from None
        raise error from None
    except (HydraException, OmegaConfBaseException) as exc:  # composing failed: no job ran
        raise ConvbenchError(describe_config_error(exc, arguments)) from None
    except yaml.YAMLError as exc:  # a config file of the user's (--config-dir) does not parse
        raise ConvbenchError(
            f"a config file is not valid YAML: {' '.join(str(exc).split())}. Fix that file (its "
            "name and line are above); nothing was run."
        ) from None
    except BrokenPipeError:  # `convbench train --help | head`: the reader left
        raise
    except OSError as exc:  # Hydra could not write a run folder's .hydra/ or train.log
        where = Path(exc.filename or "outputs")
        raise write_failed(
            "the run folder's files, at", where, exc, kept="Nothing was trained."
        ) from None
    except Exception as exc:
        if not is_job_failure(exc, failed_jobs(sweep_dirs)):
            raise  # not a job's failure: a bug around the sweep
    if outcome.single_run_failure is not None:  # its peers may never reach leave()'s barrier
        raise outcome.single_run_failure
    if outcome.ran:  # a job ran in this process: leave its process group, if it joined one
        from convbench.run.ranks import leave

        leave()
    outcome.failed_jobs = failed_jobs(sweep_dirs)
    outcome.exit_code = EXIT_FAILED_JOBS if outcome.failed_jobs else 0
    return outcome


@contextlib.contextmanager
def _as_hydra_sees_it(arguments: list[str]):
    """`sys.argv` as Hydra's entry point parses it, and HYDRA_FULL_ERROR so that Hydra raises
    its errors (we word them) instead of printing them; both restored afterwards."""
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["convbench train", *arguments]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


# Flags that bring config files other than convbench's own, which may set hydra.mode.
OTHER_CONFIGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


@contextlib.contextmanager
def _mode_from_the_command_line(arguments: list[str]):
    """Hydra composes the whole config once only to read `hydra.mode` (`Hydra.get_mode`), then
    composes it again to run: a third of a small run's start. convbench's configs never set
    hydra.mode, so unless the command line sets it or brings config files of its own, the mode
    is what the command line says (`-m` or not), and Hydra is told that it is not set. Otherwise
    Hydra reads it as usual."""
    named = {argument.split("=", 1)[0] for argument in arguments}
    if named & set(OTHER_CONFIGS) or any("hydra.mode" in argument for argument in arguments):
        yield
        return
    read_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # Hydra's answer for "not set"
    try:
        yield
    finally:
        Hydra.get_mode = read_mode


def _refuse_null_groups(arguments: list[str]) -> None:
    """`model=null` (any config group) would leave a run without its model: refused, with the
    group's options. A group removed on purpose is written `~model` and replaced with
    `+model=...`."""
    try:
        parsed = get_args_parser().parse_intermixed_args(arguments)
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
    except (Exception, SystemExit):  # Hydra reports a command line it cannot parse
        return
    for override in overrides:
        group = override.key_or_group
        folder = config_dir() / group
        if "." in group or override.is_delete() or not folder.is_dir():
            continue
        if override.value() is None:
            choices = sorted(path.stem for path in folder.glob("*.yaml"))
            raise ConvbenchError(
                f"{group}=null leaves the run without a {group}: choose one of "
                f"{', '.join(choices)} (e.g. {group}={choices[0]}). To use a {group} config of "
                f"your own instead, write ~{group} '+{group}={{...}}' or use --config-dir."
            )


def _quoted(value: str) -> str:

    return quoted(value)


def _decided_sweep_dir(arguments: list[str]) -> Path | None:
    """The folder a sweep (`-m`) will write, as its config resolves `hydra.sweep.dir` now (the
    time and a random suffix in it are fixed from here on); None for a single run, for a flag
    that only prints, or when the config does not compose (Hydra then reports why)."""
    if not {"-m", "--multirun"} & set(arguments) or INSPECTING_FLAGS & set(arguments):
        return None

    try:
        parsed = get_args_parser().parse_intermixed_args(arguments)
        overrides = OverridesParser.create().parse_overrides(parsed.overrides)
        fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
        cfg = compose(fixed, parsed.config_dir, with_hydra=True)
        return Path(str(cfg.hydra.sweep.dir))
    except (Exception, SystemExit):  # the real run, next, reports the mistake in full
        return None


def _task(cfg, arguments: list[str], outcome: TrainOutcome) -> dict:
    """Hydra's task function: one job (convbench.launch.job). Imported here, when a job runs,
    so that torch is not imported before a mistake in the config is told."""
    from convbench.launch import job

    outcome.ran = True
    return job.run(cfg, arguments, outcome)


class ConfigRejected(BaseException):
    """Carries what the checks of convbench.launch.callback raised (a `ConvbenchError`, or a
    bug's own exception) past Hydra's callback runner to `train`, which raises it again."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
