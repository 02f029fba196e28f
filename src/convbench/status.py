"""`status.json` in every run folder: what `convbench runs` shows while and after a run goes.

{"status": "running" | "finished" | "failed" | "interrupted", "updated": ISO time, "epoch": int,
 "step": int, "epochs": int, "best_val_acc": float | null, "error": str | null, "pid": int, "host": str}
"""

import json
import os
import socket
from datetime import datetime
from pathlib import Path


def write_status(run_dir: Path, status: str, *, state=None, epochs: int = 0, error=None) -> None:
    """Atomically replace `run_dir/status.json`."""
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
    write_json(run_dir / "status.json", record)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file, then rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
