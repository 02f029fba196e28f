"""Self-describing checkpoints, written atomically and read without running code.

A checkpoint is a dict of tensors and plain Python values (`torch.save`), read back with
`torch.load(weights_only=True)` only, so a crafted pickle cannot run code. It carries the resolved
config, so `convbench eval RUN_DIR` and `convbench resume RUN_DIR` need no command line.

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over the
target: a crash or a full disk during a save leaves the previous checkpoint intact.
"""

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from convbench.errors import CheckpointError

FORMAT = "convbench.checkpoint"
VERSION = 1
TMP_MARK = ".tmp-"  # leftovers of an interrupted save: `.last.pt.tmp-<pid>`


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Atomically write `payload` (plus the format marker) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (POSIX); harmless where directories cannot be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a convbench checkpoint safely; any other file is refused with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a loadable convbench checkpoint: it is corrupt, truncated, or holds "
            f"objects that safe loading refuses to run ({first_line}). Nothing was executed. "
            "Use a checkpoint written by convbench (checkpoints/last.pt or best.pt of a run)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a convbench checkpoint (no '{FORMAT}' marker). "
            "Use checkpoints/last.pt or best.pt from a convbench run folder."
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this convbench reads "
            f"version {VERSION}."
        )
    return payload


class Checkpointer:
    """Writes `last.pt` after every epoch and `best.pt` when validation accuracy improves."""

    def __init__(self, folder: Path, config: dict, model, optimizer, scheduler, scaler):
        self.folder = Path(folder)
        self.config = config
        self.model, self.optimizer, self.scheduler, self.scaler = (
            model,
            optimizer,
            scheduler,
            scaler,
        )

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def payload(self, state) -> dict[str, Any]:
        model = getattr(self.model, "_orig_mod", self.model)  # unwrap torch.compile
        return {
            "config": self.config,
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": {
                "epoch": state.epoch,
                "step": state.step,
                "best_val_acc": state.best_val_acc,
                "best_epoch": state.best_epoch,
                "history": state.history,
            },
        }

    def save(self, state, is_best: bool) -> None:
        payload = self.payload(state)
        save_checkpoint(payload, self.last)
        if is_best:
            save_checkpoint(payload, self.best)
