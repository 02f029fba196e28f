"""Self-describing checkpoints, written atomically and read without running code.

A checkpoint is a dict of tensors and plain Python values (`torch.save`), read back with
`torch.load(weights_only=True)` only, so a crafted pickle cannot run code. It carries the resolved
config, so `convbench eval RUN_DIR` and `convbench resume RUN_DIR` need no command line.

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over the
target: a crash or a full disk during a save leaves the previous checkpoint intact.
"""

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convbench.errors import CheckpointError
from convbench.files import atomic_write, write_failed

FORMAT = "convbench.run.checkpoint"
VERSION = 2  # 2: the config as composed, with what the run settled beside it


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Atomically write `payload` (plus the format marker) to `path`."""
    marked = {"format": FORMAT, "version": VERSION, **payload}
    atomic_write(path, lambda handle: torch.save(marked, handle))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a convbench checkpoint safely; any other file is refused with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader error means the same thing: not a usable checkpoint
        raise CheckpointError(
            f"{path} is not a loadable convbench checkpoint: it is corrupt, truncated, or holds "
            f"objects that safe loading refuses to run ({_reason(exc)}). Nothing was executed. "
            "Use a checkpoint written by convbench (the last.pt or best.pt of a run)."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a convbench checkpoint (no '{FORMAT}' marker). "
            "Use the last.pt or best.pt of a convbench run folder."
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this convbench reads "
            f"version {VERSION}."
        )
    return payload


def _reason(exc: Exception) -> str:
    """What the reader found, without torch's advice to load with weights_only=False: the one
    step that would run a crafted file's code."""
    text = " ".join(str(exc).split())
    unpickler = re.search(
        r"WeightsUnpickler error: (.*?)(?:\.? Please use|\.? Check the doc|$)", text
    )
    if unpickler:
        return unpickler.group(1).strip()
    return text.split(". ")[0] if text else type(exc).__name__


def rng_states() -> dict[str, Any]:
    """Every global random generator a training step may draw from (dropout, user code)."""
    numpy_state = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_tuples(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(value):
    # random.setstate wants tuples; a checkpoint may hand back lists.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Settled:
    """What a run decided at its start, recorded beside its config (every checkpoint, and
    metrics.json) and used as recorded by `resume` and `eval`: the config itself stays as Hydra
    composed it, `auto` and all.

    - `precision` and `channels_last`: what trainer.precision and trainer.channels_last became
      (convbench.config.auto), and `reasons` says why for each;
    - `mean` and `std`: the per-channel statistics the images are normalized with (the
      dataset config's, or the training split's);
    - `fingerprint`: a hash of each split's content, so a resume can tell whether its data is
      the data the run started on;
    - `epochs`: the epochs the run trains: trainer.epochs, or what a trainer.steps budget came
      to on its training split (None in checkpoints written before it was recorded: read as
      trainer.epochs).
    """

    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    mean: list[float]
    std: list[float]
    fingerprint: dict[str, str]
    reasons: dict[str, str]
    epochs: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved, source: Path) -> "Settled":
        """The record read back from a checkpoint; a `CheckpointError` naming `source` when it
        is missing or malformed."""
        try:
            settled = cls(**saved)
            valid = (
                settled.precision in ("fp32", "bf16", "fp16")
                and isinstance(settled.channels_last, bool)
                and all(isinstance(v, float | int) for v in [*settled.mean, *settled.std])
                and isinstance(settled.fingerprint, dict)
                and (
                    settled.epochs is None or (type(settled.epochs) is int and settled.epochs >= 1)
                )
            )
        except TypeError:
            valid = False
        if not valid:
            raise CheckpointError(
                f"{source} has no valid record of what its run settled at the start (precision, "
                "layout, normalization): it is not a checkpoint this convbench wrote."
            )
        return settled


class Checkpointer:
    """Writes `last.pt` (every epoch, and every N steps when asked) and `best.pt` (when
    validation accuracy improves). Flushes TensorBoard first, so the curves on disk never lag
    behind the checkpoint a resume starts from.

    In a distributed run every rank calls `save` at the same step; the ranks' own random states
    and epoch sums are gathered (`group`, convbench.run.ranks) and rank 0 alone writes them,
    under "ranks", so that each rank resumes exactly where it stood.
    """

    def __init__(
        self,
        run,
        *,
        epochs: int,
        config: dict,
        settled: Settled,
        model,
        optimization,
        writer,
        group,
    ):
        self.run = run  # convbench.run.folder.RunFolder
        self.epochs = epochs
        self.config = config  # the resolved config, as Hydra composed it
        self.settled = settled
        self.model, self.optimization = model, optimization
        self.writer, self.group = writer, group

    def saved(self) -> bool:
        """Whether the run has a checkpoint to fall back on."""
        return self.run.last.is_file()

    @property
    def last(self) -> Path:
        return self.run.last

    @property
    def best(self) -> Path:
        return self.run.best

    def payload(self, state) -> dict[str, Any]:
        optimization = self.optimization
        ema = optimization.ema  # trainer.ema's AveragedModel: in last.pt, and best.pt's weights
        return {
            "config": self.config,
            "settled": self.settled.as_dict(),
            "model": self.model.state_dict(),
            "optimizer": optimization.optimizer.state_dict(),
            "scheduler": optimization.scheduler.state_dict(),
            "scaler": optimization.scaler.state_dict(),
            "state": state.state_dict(),
            "rng": rng_states(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
        }

    def save(self, state, is_best: bool) -> None:
        own = {"rng": rng_states(), "sums": state.state_dict()["sums"]}
        ranks = self.group.gather(own)  # every rank's, on every rank; a barrier too
        if not self.group.place.is_main:
            return
        self.writer.flush()
        payload = self.payload(state)
        if len(ranks) > 1:
            payload["ranks"] = ranks
        for path in (self.last, self.best) if is_best else (self.last,):
            if path == self.best and self.optimization.ema is not None:
                # best.pt's weights are the average's: what was validated, what `eval` tests.
                payload = {**payload, "model": self.optimization.ema.module.state_dict()}
            try:
                save_checkpoint(payload, path)
            except OSError as exc:
                raise self._write_failed(path, exc) from None
        # status.json follows, so that a run killed later still shows how far it got.
        self.run.write_status("running", state=state, epochs=self.epochs)

    def _write_failed(self, path: Path, exc: OSError):
        if not self.last.is_file():
            kept = "No checkpoint had been saved yet, and nothing half-written is left."
            advice = "Free some space, or fix the folder, then start the run again."
            return write_failed("the checkpoint", path, exc, kept=kept, advice=advice)
        saved = load_checkpoint(self.last)["state"]
        kept = (
            f"The previous checkpoints are intact (last.pt at epoch {saved['epoch']}, step "
            f"{saved['step']}), and nothing half-written is left."
        )
        return write_failed("the checkpoint", path, exc, kept=kept)

    def restore(self, payload: dict[str, Any], state_type):
        """Load every saved state back into the live objects; returns the `state_type`
        (engine.TrainState) the payload holds."""
        here = self.group.place
        ranks = payload.get("ranks") or [{"rng": payload["rng"], "sums": payload["state"]["sums"]}]
        if len(ranks) != here.world_size:
            raise CheckpointError(
                f"{self.last} was written by a run over {len(ranks)} process(es); this one has "
                f"{here.world_size}. Resume it with as many: `convbench resume RUN_DIR` for one, "
                f"`torchrun --nproc-per-node={len(ranks)} -m convbench resume RUN_DIR` for more."
            )
        optimization = self.optimization
        self.model.load_state_dict(payload["model"])
        optimization.optimizer.load_state_dict(payload["optimizer"])
        optimization.scheduler.load_state_dict(payload["scheduler"])
        optimization.scaler.load_state_dict(payload["scaler"])
        if optimization.ema is not None:
            optimization.ema.load_state_dict(payload["ema"])
        mine = ranks[here.rank]
        restore_rng_states(mine["rng"])
        device = next(self.model.parameters()).device
        saved = {**payload["state"], "sums": mine["sums"]}
        return state_type.from_state_dict(saved, device)


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: saved -> current' for every leaf that differs between two config dicts."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {old} -> {new}")
    return differences


def identity(config: dict) -> dict:
    """What makes weights belong to a model: the model config and the data's shape."""
    dataset = config.get("dataset", {})
    shape_keys = ("name", "num_classes", "in_channels", "image_size")
    return {"model": config.get("model", {}), "dataset": {k: dataset.get(k) for k in shape_keys}}


def identity_differences(payload: dict[str, Any], config: dict) -> list[str]:
    """How the model a checkpoint was written for differs from the one `config` builds."""
    return config_differences(identity(payload["config"]), identity(config))
