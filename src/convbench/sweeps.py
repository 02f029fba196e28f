"""Sweeps (Hydra multirun): where they write, and what became of their jobs.

What a sweep needs to know about its jobs afterwards is read from the jobs' folders
(status.json), never from process memory: launchers run jobs in other processes and on other
machines. The only thing the launching process keeps is where the sweep writes, noted by
`SweepRecorder`, a Hydra callback (conf/config.yaml, `hydra.callbacks`).
"""

from pathlib import Path

from hydra.experimental.callback import Callback

from convbench.runfolder import HYDRA_FOLDER, STATUS_FILE, find_run_dirs, read_json, read_yaml


class SweepRecorder(Callback):
    """Notes the folder of every sweep this process launches.

    `on_multirun_start` runs in the launching process, whatever the launcher, with the sweep's
    own config object, so the folder noted is the one the jobs get.
    """

    sweep_dirs: list[Path] = []  # noqa: RUF012 - shared by Hydra's instance and the caller

    def on_multirun_start(self, config, **kwargs) -> None:
        SweepRecorder.sweep_dirs.append(Path(str(config.hydra.sweep.dir)))


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
