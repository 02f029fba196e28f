"""Reading runs back: every run under a folder as plain values (what `convbench runs` lists).

Rows come from the run folders' files (convbench.run.folder), never from torch, so listing is
fast; a file that does not parse, or a value of the wrong type, shows as missing in its own row
and never stops the listing.
"""

import functools
from pathlib import Path

from convbench.config.compose import config_dir
from convbench.run.folder import RunFolder, find_runs, read_yaml
from convbench.run.folder import shown_path as shown


@functools.cache
def where_keys() -> frozenset[str]:
    """Override keys that say where or on what a run ran rather than what it trained
    (dataset.root, trainer.device, ...): Hydra's `override_dirname.exclude_keys` of
    conf/config.yaml, the one place that lists them."""

    config = read_yaml(config_dir() / "config.yaml") or {}
    try:
        return frozenset(
            str(k) for k in config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]
        )
    except (KeyError, TypeError):
        return frozenset()


def key_overrides(run: RunFolder) -> list[str]:
    """The command line's overrides, minus the `where_keys`."""
    excluded = where_keys()
    # An override is key=value, ~key, +key=value or ++key=value.
    return [o for o in run.overrides() if o.split("=", 1)[0].lstrip("~+") not in excluded]


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def read_run(run: RunFolder) -> dict:
    """One run as plain values (what `convbench runs --json` prints)."""
    config = read_yaml(run.config_file)
    config = config if isinstance(config, dict) else {}
    progress = run.status() or {}
    finals = run.metrics() or {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    target = _text(model.get("_target_")) or _text(finals.get("model")) or ""
    best_val_acc = progress.get("best_val_acc")
    if best_val_acc is None:
        best_val_acc = _number(finals.get("best_val_acc"))
    epoch = progress.get("epoch")
    epochs = progress.get("epochs") or trainer.get("epochs")
    return {
        "started": run.started().isoformat(timespec="seconds"),
        "run": shown(run.path),
        "path": str(run.path.resolve()),
        "model": run.model_name(model) if target else None,
        "dataset": _text(dataset.get("name")) or _text(finals.get("dataset")),
        "overrides": key_overrides(run),
        "epoch": epoch if epoch is not None else _number(finals.get("epochs")),
        "epochs": epochs if isinstance(epochs, int) else None,
        "best_val_acc": best_val_acc,
        "test_acc": _number(finals.get("test_acc")),
        "status": run.state(),
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
    rows = [read_run(run) for run in find_runs(root)]
    return sorted(rows, key=lambda row: (row["started"], row["run"]))
