"""Starting the processes of one run on this machine: torch's elastic launcher (what
`torchrun --standalone --nproc-per-node=N` does), and the run folder they share.

Inside the run, convbench.run.ranks says where each process stands and what they do together.
"""

import logging
import os
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from convbench.config.compose import compose, quoted
from convbench.errors import EXIT_INTERRUPTED, ConvbenchError
from convbench.run.ranks import broadcast_text, join, place

log = logging.getLogger("convbench")


def launch_local(processes: int, arguments: list[str]) -> int:
    """Run `python -m convbench ARGUMENTS` in `processes` processes on this machine through
    torch's elastic launcher (what `torchrun --standalone --nproc-per-node=N` does) and wait.
    Returns the exit code: 0, or the first failed process's (3 after a stop signal, which the
    launcher passes on to every process)."""

    # The processes report their own errors; the launcher's report of the same would repeat it.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    options = ["--standalone", f"--nproc-per-node={processes}", "--module", "convbench"]
    try:
        torchrun.run(torchrun.parse_args([*options, *arguments]))
    except ChildFailedError as failed:
        codes = [failure.exitcode for failure in failed.failures.values()]
        return next((code for code in codes if code > 0), 1)
    except SignalException:
        return EXIT_INTERRUPTED  # the processes saved last.pt and stopped
    return 0


def one_folder_for_all_ranks(arguments: list[str]) -> list[str]:
    """In a distributed run (torchrun), every process runs `convbench train`; they must share
    one run folder, and only rank 0 may write it. Rank 0 chooses the folder (hydra.run.dir as it
    resolves, unless the command line gives it) and tells the others, which write no .hydra/ and
    no train.log. Outside torchrun: the arguments unchanged."""

    here = place()
    if not here.is_distributed:
        return arguments
    if any(arg in ("-m", "--multirun") for arg in arguments):
        raise ConvbenchError(
            "a sweep (-m) cannot run inside torchrun: start the sweep as usual and give each "
            "job several processes with trainer.devices=N, or use a launcher "
            "(hydra/launcher=submitit_slurm with one task per process)."
        )
    join(here)
    if not any(arg.startswith("hydra.run.dir=") for arg in arguments):
        folder = broadcast_text(_resolved_run_dir(arguments) if here.is_main else None, here)
        if not folder:  # rank 0 could not compose the config: it reports why
            raise ConvbenchError("rank 0 could not compose the run's config; see its message.")
        arguments = [*arguments, f"hydra.run.dir={quoted(folder)}"]
    if here.is_main:
        return arguments
    # The other ranks log nothing: no .hydra/, no train.log, and no console handler to tune.
    own = [arg for arg in arguments if "hydra.job_logging" not in arg]
    return [
        *own,
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]


def _resolved_run_dir(arguments: list[str]) -> str:
    """hydra.run.dir as `convbench train ARGUMENTS` would resolve it ("" when it cannot)."""

    flags = [arg for arg in arguments if not arg.startswith("-")]
    try:
        return str(compose(flags, with_hydra=True).hydra.run.dir)
    except Exception:  # the real composition, next, reports the mistake in full
        return ""


def train_on_devices(devices: int, run_dir: Path, arguments: list[str]) -> None:
    """trainer.devices=N: the run's N processes, started by torch's elastic launcher, train it
    in the folder Hydra just made; this process waits and exits with their exit code."""

    own = [arg for arg in arguments if not arg.startswith("hydra.run.dir=")]
    code = launch_local(devices, ["train", *own, f"hydra.run.dir={quoted(str(run_dir))}"])
    raise SystemExit(code)


def share_the_machine(cfg) -> None:
    """Jobs the joblib launcher runs side by side on one machine: unless trainer.num_threads
    says otherwise, each takes an equal part of the cores (torch's default would give every
    job all of them, and they would fight over them); with several GPUs, job k takes GPU
    k mod their number."""

    hydra_cfg = HydraConfig.get()
    if "joblib" not in str(hydra_cfg.launcher.get("_target_", "")).lower():
        return

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
