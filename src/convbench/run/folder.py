"""The run folder, the unit of truth: its layout, its status file, and reading runs back.

A run folder (Hydra makes it for `train`; `resume` reuses it):

    .hydra/config.yaml, overrides.yaml, hydra.yaml   the resolved config and the command line
    train.log                                        the console log, with timestamps
    status.json                                      what the run is doing (below)
    events.out.tfevents.*                            TensorBoard
    checkpoints/last.pt, best.pt                     see convbench.run.checkpoint
    metrics.json                                     the final metrics, once the run finished
    .convbench.lock                                  locked while a process trains the run

status.json: {"status": "running" | "finished" | "failed" | "interrupted", "updated": ISO time,
"epoch": int, "step": int, "epochs": int, "best_val_acc": float | null, "error": str | null,
"pid": int, "host": str}.

Everything here reads files only (no torch), so listing runs is fast. Whatever another process
(a sweep launcher, a second machine) needs to know about a run is in these files, never in a
process's memory.
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

from convbench.files import write_failed, write_json

log = logging.getLogger("convbench")

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
HYDRA_FOLDER = ".hydra"
LOCK_FILE = ".convbench.lock"


def write_status(run_dir: Path, status: str, *, state=None, epochs: int = 0, error=None) -> None:
    """Atomically replace `run_dir/status.json`; `WriteFailed` when the OS refuses."""
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
        write_json(run_dir / STATUS_FILE, record)
    except OSError as exc:
        kept = "Nothing else was written."
        raise write_failed("the status file", run_dir / STATUS_FILE, exc, kept) from None


def record_status(run_dir: Path, status: str, **details) -> None:
    """`write_status` on the way out of a failed run: the error being reported matters more than
    the status file, so a refused write is only logged."""
    from convbench.errors import WriteFailed

    try:
        write_status(run_dir, status, **details)
    except WriteFailed as exc:
        log.warning("status.json could not say %s: %s", status, exc)


def read_json(path: Path) -> dict | None:
    """The file's object, or None when it is missing or unreadable (a run is never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(path: Path):
    """The file's YAML content, or None when it is missing or unreadable."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def find_run_dirs(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that hold `.hydra/` or `status.json`."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if HYDRA_FOLDER in subfolders or STATUS_FILE in files:
            found.append(Path(folder))
            subfolders.clear()  # runs do not nest: skip checkpoints/ and the like
        else:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    return found


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError):
        return False
    return True


def run_status(status: dict | None, metrics: dict | None) -> str:
    """What a run's files say about it.

    A "running" run whose process is gone was killed without a chance to say so: "interrupted".
    Runs without a status file are "finished" when they have a metrics.json, else "unknown".
    """
    if status is None:
        return "finished" if metrics is not None else "unknown"
    state = str(status.get("status", "unknown"))
    if state == "running":
        pid = status.get("pid")
        # A pid only means something on the machine that wrote it (outputs/ may be shared).
        here = status.get("host") in (None, socket.gethostname())
        if here and isinstance(pid, int) and not process_alive(pid):
            return "interrupted"
    return state


def where_keys() -> set[str]:
    """Override keys that say where or on what a run ran rather than what it trained
    (dataset.root, trainer.device, ...): Hydra's `override_dirname.exclude_keys` of
    conf/config.yaml, the one place that lists them."""
    from convbench.config.compose import config_dir

    config = read_yaml(config_dir() / "config.yaml") or {}
    try:
        return {
            str(k) for k in config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
        }
    except (KeyError, TypeError):
        return set()


def key_overrides(run_dir: Path) -> list[str]:
    """The command line's overrides, minus the `where_keys`."""
    overrides = read_yaml(run_dir / HYDRA_FOLDER / "overrides.yaml") or []
    excluded = where_keys()
    # An override is key=value, ~key, +key=value or ++key=value.
    return [o for o in map(str, overrides) if o.split("=", 1)[0].lstrip("~+") not in excluded]


def _started(run_dir: Path) -> datetime:
    # Hydra writes .hydra/config.yaml before training starts.
    config_file = run_dir / HYDRA_FOLDER / "config.yaml"
    marker = config_file if config_file.exists() else run_dir
    return datetime.fromtimestamp(marker.stat().st_mtime).astimezone()


def read_run(run_dir: Path, root: Path) -> dict:
    """One run as plain values (what `convbench runs --json` prints)."""
    config = read_yaml(run_dir / HYDRA_FOLDER / "config.yaml") or {}
    status = read_json(run_dir / STATUS_FILE)
    metrics = read_json(run_dir / METRICS_FILE)
    progress = status or {}
    finals = metrics or {}
    model = config.get("model") or {}
    target = str(model.get("_target_") or finals.get("model") or "")
    best_val_acc = progress.get("best_val_acc")
    return {
        "started": _started(run_dir).isoformat(timespec="seconds"),
        "run": str(run_dir.relative_to(root)),
        "path": str(run_dir.resolve()),
        "model": target.rsplit(".", 1)[-1] or None,
        "dataset": (config.get("dataset") or {}).get("name") or finals.get("dataset"),
        "overrides": key_overrides(run_dir),
        "epoch": progress.get("epoch", finals.get("epochs")),
        "epochs": progress.get("epochs") or (config.get("trainer") or {}).get("epochs"),
        "best_val_acc": best_val_acc if best_val_acc is not None else finals.get("best_val_acc"),
        "test_acc": finals.get("test_acc"),
        "status": run_status(status, metrics),
        "updated": progress.get("updated"),
        "error": progress.get("error"),
        "pid": progress.get("pid"),
    }


def list_runs(root: Path) -> list[dict]:
    """Every run under `root`, oldest first (the newest ends up next to the prompt).

    Raises FileNotFoundError when `root` is not a folder.
    """
    if not root.is_dir():
        raise FileNotFoundError(root)
    rows = [read_run(run_dir, root) for run_dir in find_run_dirs(root)]
    return sorted(rows, key=lambda row: (row["started"], row["run"]))


class RunLock:
    """An exclusive lock on a run folder, held while a process trains or resumes the run.

    `flock` on RUN/.convbench.lock: the kernel releases it when the process ends, however it
    ends, so a SIGKILL leaves no stale lock, and Linux's NFS client turns it into a POSIX lock
    that other machines see. The file keeps the holder's pid and host for the message a second
    process gets; it stays in the folder after the run (deleting it would race a new holder).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        from convbench.errors import RunInUse

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            advice = "Free some space, or fix the folder, then try again."
            raise write_failed("the run's lock file", self.path, exc, "", advice) from None
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
