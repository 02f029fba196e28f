"""Sweeps (Hydra multirun): where they write, and what became of their jobs.

What a sweep needs to know about its jobs afterwards is read from the jobs' folders
(status.json), never from process memory: launchers run jobs in other processes and on other
machines. The only thing the launching process keeps is where the sweep writes, noted by
convbench.launch.callback.
"""

import re
from pathlib import Path

from convbench.config.compose import quoted
from convbench.config.trust import BUILT_GROUPS, Trust, check_target
from convbench.errors import ConvbenchError
from convbench.run.folder import SWEEP_FILE, find_runs, read_yaml


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def failed_jobs(sweep_dirs: list[Path]) -> list[dict]:
    """{num, run_dir, error} of every job whose status.json says it failed, in job order."""
    failed = []
    for sweep_dir in sweep_dirs:
        for run in find_runs(sweep_dir):
            status = run.status() or {}
            if status.get("status") == "failed":
                error = one_line(status.get("error") or "")
                failed.append({"num": run.job_number(), "run_dir": str(run.path), "error": error})
    return sorted(failed, key=lambda job: (str(job["num"]).zfill(9), job["run_dir"]))


def is_job_failure(exc: BaseException, failed: list[dict]) -> bool:
    """Whether `exc` is one of the failed jobs' exceptions, re-raised by Hydra's sweeper after
    the jobs ran (its message is the one the job recorded)."""
    return any(one_line(str(exc)) == job["error"] for job in failed)


def is_sweep_dir(folder: Path) -> bool:
    return (folder / SWEEP_FILE).is_file()


# Hydra overrides a sweep's record may hand back to Hydra on `convbench resume SWEEP_DIR`: where
# and how the jobs run, never what code runs (a callback, a logging handler or a `_target_`
# would be a file choosing code). The key, without its +/++ prefix, must match one of these.
RELAUNCH_HYDRA_KEYS = re.compile(
    r"hydra/(launcher|sweeper)|hydra\.mode|hydra\.verbose|hydra\.job\.chdir"
    r"|hydra\.sweep\.(dir|subdir)|hydra\.sweeper\.(params\.[\w.]+|max_batch_size)"
    r"|hydra\.launcher\.[a-zA-Z]\w*|hydra\.job_logging\.handlers\.console\.level"
)
TARGET_IN_VALUE = re.compile(r"_target_\W*([\w.]+)")


def read_sweep_record(sweep_dir: Path) -> dict:
    """The `hydra` node of the sweep's multirun.yaml; a `ConvbenchError` naming the file when
    it is missing, unreadable or not a sweep's record (nothing is launched then)."""
    path = sweep_dir / SWEEP_FILE
    recorded = read_yaml(path) if path.is_file() else None
    hydra = recorded.get("hydra") if isinstance(recorded, dict) else None
    overrides = hydra.get("overrides") if isinstance(hydra, dict) else None
    lists = [overrides.get(part) or [] for part in ("hydra", "task")] if overrides else None
    if not isinstance(overrides, dict) or not all(
        isinstance(items, list) and all(isinstance(item, str) for item in items) for items in lists
    ):
        raise ConvbenchError(
            f"{path} is {'missing' if not path.is_file() else 'not a readable sweep record'}: "
            "Hydra writes it when a sweep starts, with the overrides every job was launched "
            "with, and resuming the sweep relaunches exactly those. Without it nothing can say "
            "what the jobs were, so nothing was launched. Resume the jobs one by one "
            "(`convbench resume JOB_DIR`), or start the sweep again."
        )
    return hydra


def relaunch_arguments(sweep_dir: Path, config_dirs: list[Path] = ()) -> list[str]:
    """`convbench train` arguments that run the sweep of `sweep_dir` again, into the same folder:
    its recorded overrides (from multirun.yaml) and the config folders it was given.

    The record is input from disk, so it may not choose code (convbench.config.trust): a config folder
    it names must be given again on this command line (`config_dirs`), a Hydra override must
    be one of RELAUNCH_HYDRA_KEYS, and a `_target_` in an override must be a built-in class or
    named by those folders. Anything else is a `ConvbenchError` before any job starts."""

    hydra = read_sweep_record(sweep_dir)
    overrides = hydra["overrides"]
    source = str(sweep_dir / SWEEP_FILE)
    given = {str(Path(folder).resolve()) for folder in config_dirs}
    extra_dirs = []
    for folder, provider in _recorded_config_dirs(hydra):
        if str(Path(folder).resolve()) not in given:
            raise ConvbenchError(
                f"{source} says the sweep was started with --config-dir {folder}. A sweep folder "
                "cannot choose the code that runs, so give that folder again if you trust it: "
                f"convbench resume {sweep_dir} --config-dir {folder}. Nothing was launched."
            )
        if provider == "command-line":  # the other kind comes back with hydra.searchpath
            extra_dirs += ["--config-dir", folder]
    keep = []
    for override in overrides.get("hydra") or []:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in ("hydra.mode", "hydra.sweep.dir"):
            continue  # set again below
        allowed = RELAUNCH_HYDRA_KEYS.fullmatch(key) or key == "hydra.searchpath"  # checked above
        if not allowed or "_target_" in override:
            raise ConvbenchError(
                f"{source} holds the Hydra override {override!r}, which a resumed sweep will not "
                "take from a file: only where and how jobs run (hydra/launcher, hydra.launcher.*, "
                "hydra.sweeper.params.*, ...) comes back from the record, never code to run. "
                "Nothing was launched. Start the sweep again with the overrides you mean."
            )
        keep.append(override)
    trust = Trust.of_folders(config_dirs)
    for override in overrides.get("task") or []:
        key = override.split("=", 1)[0].lstrip("+~")
        group = key.split(".", 1)[0] if key.split(".", 1)[0] in BUILT_GROUPS else "model"
        named = TARGET_IN_VALUE.findall(override)
        if key.endswith("_target_"):
            named += override.split("=", 1)[1].split(",")
        for target in named:
            check_target(group, target.strip(), trust=trust, source=source)
    sweep = f"hydra.sweep.dir={quoted(str(sweep_dir.resolve()))}"
    return [*extra_dirs, "-m", *keep, sweep, *(overrides.get("task") or [])]


def _recorded_config_dirs(hydra: dict) -> list[tuple[str, str]]:
    """(folder, how it was given) for the extra config folders a sweep was started with:
    "command-line" (--config-dir) or "hydra.searchpath in command-line"."""
    sources = (hydra.get("runtime") or {}).get("config_sources") or []
    return [
        (str(source["path"]), source["provider"])
        for source in sources
        if isinstance(source, dict)
        and source.get("provider") in ("command-line", "hydra.searchpath in command-line")
        and source.get("schema") == "file"
    ]


def job_outcomes(sweep_dir: Path) -> list[dict]:
    """{num, run_dir, status, test_acc, error} of every job folder of the sweep, in job order."""
    jobs = []
    for run in find_runs(sweep_dir):
        metrics = run.metrics() or {}
        accuracy = metrics.get("test_acc")
        jobs.append(
            {
                "num": run.job_number(),
                "run_dir": run.path,
                "status": run.state(),
                "test_acc": accuracy if isinstance(accuracy, int | float) else None,
                "error": one_line((run.status() or {}).get("error") or ""),
            }
        )
    return sorted(jobs, key=lambda job: (str(job["num"]).zfill(9), str(job["run_dir"])))
