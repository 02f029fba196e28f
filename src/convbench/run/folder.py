"""The run folder, the unit of truth: every path of a run, what its files say, and its lock.

A run folder (Hydra makes it for `train`; `resume` reuses it):

    .hydra/config.yaml, overrides.yaml, hydra.yaml   the config as Hydra composed it, the command
                                                     line, Hydra's own settings
    train.log                                        the console log, with timestamps
    status.json                                      what the run is doing (below)
    events.out.tfevents.*                            TensorBoard
    checkpoints/last.pt, best.pt                     see convbench.run.checkpoint
    metrics.json                                     the final metrics, once the run finished
    .convbench.lock                                  locked while a process trains the run

status.json: {"status": "running" | "finished" | "failed" | "interrupted", "updated": ISO time,
"epoch": int, "step": int, "epochs": int, "best_val_acc": float | null, "error": str | null,
"pid": int, "host": str}.

A run is finished when status.json says so and its metrics.json can be read (`is_finished`):
the one definition that the lifecycle, `resume`, `runs`, `compare` and the sweeper use.

Everything here reads files only (no torch), so listing runs is fast; whatever another process
(a sweep launcher, a second machine) needs to know about a run is in these files, never in a
process's memory. Files are input from outside: a value of the wrong type reads as missing.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path

import yaml

from convbench.errors import CheckpointError, ConvbenchError, RunInUse, WriteFailed
from convbench.files import write_failed, write_json

SWEEP_FILE = "multirun.yaml"  # Hydra writes it in every sweep's folder, before the jobs run

log = logging.getLogger("convbench")

# "pruned": a study's trial its pruner stopped (convbench.run.pruning), a result kept as it is.
STATES = ("running", "finished", "failed", "interrupted", "pruned")
# status.json's fields and the types each may hold; anything else reads as None.
STATUS_TYPES = {
    "status": str,
    "updated": str,
    "epoch": int,
    "step": int,
    "epochs": int,
    "best_val_acc": float,
    "error": str,
    "pid": int,
    "host": str,
}


class RunFolder:
    """One run's folder: its paths, its status and metrics, its lock."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunFolder) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def hydra_dir(self) -> Path:
        return self.path / ".hydra"

    @property
    def config_file(self) -> Path:
        """The config as Hydra composed it (interpolations unresolved)."""
        return self.hydra_dir / "config.yaml"

    @property
    def overrides_file(self) -> Path:
        return self.hydra_dir / "overrides.yaml"

    @property
    def hydra_file(self) -> Path:
        return self.hydra_dir / "hydra.yaml"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def lock_file(self) -> Path:
        return self.path / ".convbench.lock"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def checkpoint(self, which: str) -> Path:
        """checkpoints/{best,last}.pt, or a `ConvbenchError` saying what is there instead."""
        if not self.path.is_dir():
            raise ConvbenchError(
                f"{self.path} is not a folder. Pass a run folder, e.g. one that `convbench runs` "
                "lists."
            )
        path = self.best if which == "best" else self.last
        if not path.is_file():
            present = sorted(p.name for p in self.checkpoints.glob("*.pt"))
            choose = f" (it has {', '.join(present)}; choose with --checkpoint)" if present else ""
            raise CheckpointError(
                f"{self.path} has no checkpoints/{path.name}{choose}. A run writes last.pt and "
                "best.pt after its first epoch; pass the folder of a run that got that far (see "
                "`convbench runs`)."
            )
        return path

    def is_run(self) -> bool:
        """Whether the folder holds a run: Hydra's .hydra/ or a status.json."""
        return self.hydra_dir.is_dir() or self.status_file.is_file()

    # -- what its files say --------------------------------------------------------------------
    def status(self) -> dict | None:
        """status.json, each field checked against STATUS_TYPES (a wrong one reads as None);
        None when the file is missing or unreadable."""
        found = read_json(self.status_file)
        if found is None:
            return None
        checked = {}
        for key, kind in STATUS_TYPES.items():
            value = found.get(key)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            is_bool = isinstance(value, bool)
            checked[key] = value if isinstance(value, kind) and not is_bool else None
        return checked

    def metrics(self) -> dict | None:
        """metrics.json, or None when it is missing or unreadable."""
        return read_json(self.metrics_file)

    def is_finished(self) -> bool:
        """status.json says finished and metrics.json can be read."""
        return (self.status() or {}).get("status") == "finished" and self.metrics() is not None

    @staticmethod
    def any_finished_under(path: Path) -> bool:
        """Whether some folder under `path`, at any depth, holds a finished run."""
        name = RunFolder(path).status_file.name
        return any(RunFolder(found.parent).is_finished() for found in Path(path).rglob(name))

    def state(self) -> str:
        """What the files say the run is doing: one of STATES, or "unknown".

        A "running" run whose process is gone (on this machine) was killed without a chance to
        say so: "interrupted". "finished" needs metrics.json as well (`is_finished`)."""
        status = self.status() or {}
        state = status.get("status")
        if state not in STATES or (state == "finished" and self.metrics() is None):
            return "unknown"
        pid = status.get("pid")
        # A pid only means something on the machine that wrote it (outputs/ may be shared).
        here = status.get("host") in (None, socket.gethostname())
        if state == "running" and here and pid is not None and not process_alive(pid):
            return "interrupted"
        return state

    def started(self) -> datetime:
        """When the run started: Hydra writes .hydra/config.yaml before training starts."""
        marker = self.config_file if self.config_file.exists() else self.path
        return datetime.fromtimestamp(marker.stat().st_mtime).astimezone()

    def overrides(self) -> list[str]:
        """The command line's overrides (.hydra/overrides.yaml), [] when unreadable."""
        found = read_yaml(self.overrides_file)
        return [str(item) for item in found] if isinstance(found, list) else []

    def sweep_overrides(self) -> list[str]:
        """The command line of the sweep this run is a job of, as typed (`model=mlp,lenet`:
        the sweep's SWEEP_FILE beside the job folders); [] for a single run."""
        record = read_yaml(self.path.parent / SWEEP_FILE)
        hydra = record.get("hydra") if isinstance(record, dict) else None
        overrides = hydra.get("overrides") if isinstance(hydra, dict) else None
        task = overrides.get("task") if isinstance(overrides, dict) else None
        return [str(item) for item in task] if isinstance(task, list) else []

    def choices(self) -> dict[str, str]:
        """The config group options the run was composed of (.hydra/hydra.yaml), e.g.
        {"model": "plainnet", "dataset": "fashionmnist"}; {} when unreadable."""
        hydra = read_yaml(self.hydra_file)
        hydra = hydra.get("hydra") if isinstance(hydra, dict) else None
        runtime = hydra.get("runtime") if isinstance(hydra, dict) else None
        found = runtime.get("choices") if isinstance(runtime, dict) else None
        return (
            {str(k): str(v) for k, v in found.items() if v is not None}
            if isinstance(found, dict)
            else {}
        )

    def model_name(self, model_config: dict | None = None) -> str:
        """The model as a person names it, the same in every command: its config option and
        depth (`plainnet-56`, `lenet`), or its class's name when the folder does not say."""
        if model_config is None:
            config = read_yaml(self.config_file)
            model_config = config.get("model") if isinstance(config, dict) else None
        return model_name(self.choices().get("model"), model_config)

    def job_number(self):
        """A sweep job's `hydra.job.num` from .hydra/hydra.yaml ("?" when unreadable)."""
        hydra = read_yaml(self.hydra_file)
        hydra = hydra.get("hydra") if isinstance(hydra, dict) else None
        job = hydra.get("job") if isinstance(hydra, dict) else None
        number = job.get("num") if isinstance(job, dict) else None
        return number if isinstance(number, int) else "?"

    # -- writing -------------------------------------------------------------------------------
    def write_status(self, status: str, *, state=None, epochs: int = 0, error=None) -> None:
        """Atomically replace status.json; `WriteFailed` when the OS refuses."""
        best = getattr(state, "best_val_acc", None)
        record = {
            "status": status,
            "updated": datetime.now().astimezone().isoformat(timespec="seconds"),
            "epoch": getattr(state, "epoch", 0),
            "step": getattr(state, "step", 0),
            "epochs": epochs,
            "best_val_acc": best if best is not None and best >= 0 else None,
            "error": error,
            "pid": os.getpid(),
            "host": socket.gethostname(),  # a pid means something only on its own machine
        }
        try:
            write_json(self.status_file, record)
        except OSError as exc:
            kept = "Nothing else was written."
            raise write_failed("the status file", self.status_file, exc, kept=kept) from None

    def record_status(self, status: str, **details) -> None:
        """`write_status` on the way out of a failed run: the error being reported matters more
        than the status file, so a refused write is only logged."""
        try:
            self.write_status(status, **details)
        except WriteFailed as exc:
            log.warning("status.json could not say %s: %s", status, exc)

    def write_metrics(self, metrics: dict) -> None:
        """metrics.json, atomically; the OS's refusal propagates as OSError."""
        write_json(self.metrics_file, metrics)

    def lock(self) -> "RunLock":
        return RunLock(self)


def shown_path(path: Path) -> str:
    """A path as every command prints it, so that every other command accepts it as typed:
    relative to the current folder when it lies below it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def model_name(choice: str | None, model_config) -> str:
    """`plainnet-56` from the option `plainnet` and a config with depth 56; without an option,
    the class's name in lower case (`mynets.TinyNet` -> `tinynet`)."""
    model_config = model_config if isinstance(model_config, dict) else {}
    target = str(model_config.get("_target_") or "")
    name = choice or target.rsplit(".", 1)[-1].lower() or "?"
    depth = model_config.get("depth")
    return f"{name}-{depth}" if isinstance(depth, int) and not isinstance(depth, bool) else name


def read_json(path: Path) -> dict | None:
    """The file's object, or None when it is missing or unreadable (a run is never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# libyaml's safe loader where PyYAML was built with it: the same documents, read about 10x
# faster (a sweep's multirun.yaml and hydra.yaml are read for every run `runs` and `compare` list).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path):
    """The file's YAML content, or None when it is missing or unreadable."""
    try:
        return yaml.load(path.read_text(), Loader=SAFE_LOADER)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def find_runs(root: Path) -> list[RunFolder]:
    """Run folders under `root` (itself included), in path order; runs do not nest."""
    found = []
    for folder, subfolders, _ in os.walk(root):
        run = RunFolder(folder)
        if run.is_run():
            found.append(run)
            subfolders.clear()  # skip checkpoints/ and the like
        else:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
    return sorted(found, key=lambda run: str(run.path))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError, ValueError):
        return False
    return True


def process_started(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (Linux's /proc/PID/stat), or None where
    that cannot be read: with the pid it names one process, though pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


class RunLock:
    """An exclusive lock on a run folder, held while a process trains or resumes the run.

    `flock` on RUN/.convbench.lock: the kernel releases it when the process ends, however it
    ends, so a SIGKILL leaves no stale lock, and Linux's NFS client turns it into a POSIX lock
    that other machines see. The file keeps the holder's pid and host for the message a second
    process gets; it stays in the folder after the run (deleting it would race a new holder).
    """

    def __init__(self, run: RunFolder):
        self.path = run.lock_file
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            advice = "Free some space, or fix the folder, then try again."
            raise write_failed(
                "the run's lock file", self.path, exc, kept="", advice=advice
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            pid, host = [*holder, "?", "?"][:2]
            raise RunInUse.held_by(self.path.parent, pid, host) from None
        self._fd = fd
        with contextlib.suppress(OSError):  # the lock holds even if the note cannot be written
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
