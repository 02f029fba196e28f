"""Sweeps (Hydra multirun): where they write, and what became of their jobs.

What a sweep needs to know about its jobs afterwards is read from the jobs' folders
(status.json), never from process memory: launchers run jobs in other processes and on other
machines. The only thing the launching process keeps is where the sweep writes, noted by
convbench.hydra_callback.
"""

from pathlib import Path

from convbench.compose import quoted
from convbench.runfolder import (
    HYDRA_FOLDER,
    STATUS_FILE,
    find_run_dirs,
    read_json,
    read_yaml,
    run_status,
)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def job_number(run_dir: Path):
    """The job's `hydra.job.num` from its .hydra/hydra.yaml ("?" when unreadable)."""
    hydra = read_yaml(run_dir / HYDRA_FOLDER / "hydra.yaml") or {}
    return ((hydra.get("hydra") or {}).get("job") or {}).get("num", "?")


def failed_jobs(sweep_dirs: list[Path]) -> list[dict]:
    """{num, run_dir, error} of every job whose status.json says it failed, in job order."""
    failed = []
    for sweep_dir in sweep_dirs:
        for run_dir in find_run_dirs(sweep_dir):
            status = read_json(run_dir / STATUS_FILE) or {}
            if status.get("status") == "failed":
                error = one_line(status.get("error") or "")
                failed.append({"num": job_number(run_dir), "run_dir": str(run_dir), "error": error})
    return sorted(failed, key=lambda job: (str(job["num"]).zfill(9), job["run_dir"]))


def is_job_failure(exc: BaseException, failed: list[dict]) -> bool:
    """Whether `exc` is one of the failed jobs' exceptions, re-raised by Hydra's sweeper after
    the jobs ran (its message is the one the job recorded)."""
    return any(one_line(str(exc)) == job["error"] for job in failed)


SWEEP_FILE = "multirun.yaml"  # Hydra writes it in every sweep's folder


def is_sweep_dir(folder: Path) -> bool:
    return (folder / SWEEP_FILE).is_file()


def relaunch_arguments(sweep_dir: Path) -> list[str]:
    """`convbench train` arguments that run the sweep of `sweep_dir` again, into the same folder:
    its recorded overrides (from multirun.yaml) and the config folder it was given."""
    recorded = read_yaml(sweep_dir / SWEEP_FILE) or {}
    hydra = recorded.get("hydra") or {}
    overrides = hydra.get("overrides") or {}
    keep = [
        override
        for override in overrides.get("hydra") or []
        if not override.split("=", 1)[0].lstrip("+").startswith(("hydra.mode", "hydra.sweep.dir"))
    ]
    extra_dirs = []
    for source in (hydra.get("runtime") or {}).get("config_sources") or []:
        if source.get("provider") == "command-line" and source.get("schema") == "file":
            extra_dirs += ["--config-dir", source["path"]]
    sweep = f"hydra.sweep.dir={quoted(str(sweep_dir.resolve()))}"
    return [*extra_dirs, "-m", *keep, sweep, *(overrides.get("task") or [])]


def job_outcomes(sweep_dir: Path) -> list[dict]:
    """{num, run_dir, status, test_acc, error} of every job folder of the sweep, in job order."""
    jobs = []
    for run_dir in find_run_dirs(sweep_dir):
        status = read_json(run_dir / STATUS_FILE) or {}
        metrics = read_json(run_dir / "metrics.json") or {}
        jobs.append(
            {
                "num": job_number(run_dir),
                "run_dir": run_dir,
                "status": run_status(status or None, metrics or None),
                "test_acc": metrics.get("test_acc"),
                "error": one_line(status.get("error") or ""),
            }
        )
    return sorted(jobs, key=lambda job: (str(job["num"]).zfill(9), str(job["run_dir"])))
