"""`convbench runs [DIR]`: every run under DIR (default outputs/) as one table row, or JSON.

A run folder is one holding `.hydra/` (Hydra writes it when the job starts) or `status.json`.
Each row is read from files only, so listing is fast and needs no torch:

- `.hydra/config.yaml`: model (the class name of `model._target_`), dataset, planned epochs; its
  modification time is the start time (Hydra writes it before training starts);
- `.hydra/overrides.yaml`: the command line's overrides, minus the keys that say where or on what
  a run ran rather than what it trained (Hydra's `override_dirname.exclude_keys`: dataset.root,
  trainer.device, ...);
- `status.json` (written by the run, see `convbench.status`): status, epochs done, best val acc,
  error; `metrics.json` (written when a run finishes): test accuracy.

A "running" run whose process is gone was killed without a chance to say so: it shows as
"interrupted". Runs made before status files existed show "finished" when they have a
metrics.json, else "unknown".
"""

import json
import os
import socket
from datetime import datetime
from pathlib import Path

from convbench.errors import ConvbenchError

# Used when a run's .hydra/hydra.yaml does not say (the same keys as conf/config.yaml).
DEFAULT_EXCLUDED_KEYS = ("dataset.root", "dataset.data_dir", "trainer.device")
# The run folder comes last: sweep folders have long names, and the others stay aligned.
COLUMNS = ("When", "Model", "Dataset", "Overrides", "Epochs", "Best val", "Test", "Status", "Run")
OVERRIDES_WIDTH = 48  # the table cuts longer override lists; --json has them whole


def _read_json(path: Path) -> dict | None:
    """The file's object, or None when it is missing or unreadable (a run is never fatal)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def find_run_dirs(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that hold `.hydra/` or `status.json`."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if ".hydra" in subfolders or "status.json" in files:
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
    """What a run's files say about it (see the module docstring)."""
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


def _key_overrides(run_dir: Path) -> list[str]:
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    hydra = _read_yaml(run_dir / ".hydra" / "hydra.yaml") or {}
    try:
        excluded = hydra["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
    except (KeyError, TypeError):
        excluded = DEFAULT_EXCLUDED_KEYS
    # An override is key=value, ~key, +key=value or ++key=value.
    return [o for o in map(str, overrides) if o.split("=", 1)[0].lstrip("~+") not in excluded]


def _started(run_dir: Path) -> datetime:
    config_file = run_dir / ".hydra" / "config.yaml"
    marker = config_file if config_file.exists() else run_dir
    return datetime.fromtimestamp(marker.stat().st_mtime).astimezone()


def read_run(run_dir: Path, root: Path) -> dict:
    """One run's row: plain values, as `--json` prints them."""
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    status = _read_json(run_dir / "status.json")
    metrics = _read_json(run_dir / "metrics.json")
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
        "overrides": _key_overrides(run_dir),
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
    """Rows of every run under `root`, oldest first (the newest ends up next to the prompt)."""
    if not root.is_dir():
        raise ConvbenchError(
            f"{root} is not a folder. Runs are written to outputs/ in the folder where "
            "`convbench train` was started: run `convbench runs` from there, or pass the folder "
            "(`convbench runs path/to/outputs`)."
        )
    rows = [read_run(run_dir, root) for run_dir in find_run_dirs(root)]
    return sorted(rows, key=lambda row: (row["started"], row["run"]))


def _accuracy(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cells(row: dict) -> tuple[str, ...]:
    overrides = " ".join(row["overrides"]) or "-"
    if len(overrides) > OVERRIDES_WIDTH:
        overrides = overrides[: OVERRIDES_WIDTH - 3] + "..."
    epoch = "?" if row["epoch"] is None else str(row["epoch"])
    epochs = "?" if row["epochs"] is None else str(row["epochs"])
    started = datetime.fromisoformat(row["started"]).strftime("%Y-%m-%d %H:%M")
    return (started, row["model"] or "?", row["dataset"] or "?", overrides, f"{epoch}/{epochs}",
            _accuracy(row["best_val_acc"]), _accuracy(row["test_acc"]), row["status"],
            row["run"])  # fmt: skip


def format_runs(rows: list[dict]) -> str:
    """Aligned plain columns (pipes well into grep and less), then the errors of failed runs."""
    table = [COLUMNS, *map(_cells, rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(COLUMNS))]
    numeric = {"Epochs", "Best val", "Test"}
    lines = [
        "  ".join(
            cell.rjust(width) if name in numeric else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, line, widths, strict=True)
        ).rstrip()
        for line in table
    ]
    failures = [
        f"  {row['run']}: {' '.join(str(row['error']).split())}" for row in rows if row["error"]
    ]
    if failures:
        lines += ["", "Errors:", *failures]
    return "\n".join(lines)


def run_runs(root: Path, as_json: bool = False) -> str:
    """The text `convbench runs [--json] DIR` prints."""
    rows = list_runs(root)
    if as_json:
        return json.dumps(rows, indent=2)
    return format_runs(rows) if rows else f"No runs under {root}."
