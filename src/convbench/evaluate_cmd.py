"""`convbench eval RUN_DIR`: test a run's checkpoint again, from the run folder alone.

The checkpoint carries the resolved config, so the model is rebuilt from its `_target_` and the
test split is loaded from the dataset config it was trained with (the same `dataset.root` or
data_dir, normalization and image size). Evaluation uses the run's eval batch size, memory format
and precision, so the best checkpoint reproduces the run's metrics.json test accuracy.
"""

import json
from pathlib import Path

from convbench.errors import CheckpointError, ConvbenchError


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """RUN_DIR/checkpoints/{best,last}.pt, or a message saying what is there instead."""
    if not run_dir.is_dir():
        raise ConvbenchError(
            f"{run_dir} is not a folder. Pass a run folder, e.g. one that `convbench runs` lists."
        )
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        present = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        raise CheckpointError(
            f"{run_dir} has no checkpoints/{which}.pt"
            + (f" (it has {', '.join(present)}; choose with --checkpoint)" if present else "")
            + ". A run writes last.pt and best.pt after its first epoch; pass the folder of a run "
            "that got that far (see `convbench runs`)."
        )
    return path


def _load_weights(model, payload: dict, path: Path) -> None:
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: its weights do not fit the model its own config builds ({first_line}). "
            "Was the model's code changed since the run? Evaluate with the code it was trained "
            "with."
        ) from None


def _device(name: str):
    from convbench.run import resolve_device

    try:
        return resolve_device(name)
    except ConvbenchError:
        raise ConvbenchError(
            f"--device {name}: this machine has no {name} device that torch can use. "
            "Use --device auto (the best available) or --device cpu."
        ) from None


def evaluate_checkpoint(path: Path, device_name: str = "auto", perturbation=None) -> dict:
    """Rebuild the model of checkpoint `path`, load its weights, test it; returns the report.

    `perturbation` (keys shift, occlude, clutter, seed; see convbench.data.perturb) alters the
    test images first, the same way for every model, to measure tolerance to them.
    """
    import torch
    from omegaconf import OmegaConf
    from torch import nn

    from convbench.checkpoint import load_checkpoint
    from convbench.data import load_splits
    from convbench.engine import evaluate
    from convbench.run import AUTOCAST_DTYPES, build, eval_batches

    payload = load_checkpoint(path)
    cfg = OmegaConf.create(payload["config"])
    data, trainer = cfg.dataset, cfg.trainer
    device = _device(device_name)
    memory_format = torch.channels_last if trainer.channels_last else torch.preserve_format
    model = build("model", cfg.model).to(device, memory_format=memory_format)
    _load_weights(model, payload, path)
    test_split = load_splits(data)["test"]
    perturbation = {k: v for k, v in (perturbation or {}).items() if v} or None
    if perturbation:
        from convbench.data import Split
        from convbench.data.perturb import perturb

        images = perturb(test_split.images, shift_pixels=perturbation.get("shift", 0),
                         occlude_side=perturbation.get("occlude", 0),
                         clutter_side=perturbation.get("clutter", 0),
                         seed=perturbation.get("seed", 0))  # fmt: skip
        test_split = Split(images, test_split.labels)
    batches = eval_batches(cfg, test_split, device)
    autocast_dtype = AUTOCAST_DTYPES[trainer.precision]
    result = evaluate(model, batches, nn.CrossEntropyLoss(), data.num_classes, autocast_dtype)
    state = payload.get("state") or {}
    return {
        "checkpoint": str(path),
        "epoch": state.get("epoch"),
        "best_val_acc": state.get("best_val_acc"),
        "model": cfg.model._target_,
        "dataset": data.name,
        "device": str(device),
        "images": int(result["confusion"].sum()),
        "test_acc": result["acc"],
        "test_loss": result["loss"],
        "perturbation": perturbation,
        "per_class": per_class_accuracy(result["confusion"], list(data.classes)),
        "confusion": result["confusion"].tolist(),
    }


def per_class_accuracy(confusion, classes: list[str]) -> list[dict]:
    """One dict per true class (a row of the confusion matrix): images, correct, accuracy."""
    rows = []
    for index, counts in enumerate(confusion.tolist()):
        images, correct = sum(counts), counts[index]
        name = classes[index] if index < len(classes) else str(index)
        rows.append({"class": name, "images": images, "correct": correct,
                     "acc": correct / images if images else None})  # fmt: skip
    return rows


def format_report(report: dict) -> str:
    """Headline numbers, then an aligned per-class table."""
    epoch = "?" if report["epoch"] is None else report["epoch"]
    header = [
        f"{report['model']} on {report['dataset']}: {report['images']:,} test images, "
        f"device {report['device']}",
        f"checkpoint {report['checkpoint']} (epoch {epoch})",
        f"test acc {report['test_acc']:.4f} | test loss {report['test_loss']:.4f}"
        + _perturbation_text(report.get("perturbation")),
        "",
    ]
    cells = [("Class", "Images", "Correct", "Acc")] + [
        (row["class"], str(row["images"]), str(row["correct"]),
         "-" if row["acc"] is None else f"{row['acc']:.4f}")
        for row in report["per_class"]
    ]  # fmt: skip
    widths = [max(len(line[column]) for line in cells) for column in range(4)]
    table = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)  # class names left
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return "\n".join(header + table)


def _perturbation_text(perturbation: dict | None) -> str:
    if not perturbation:
        return ""
    parts = [f"{name} {value}" + (" px" if name != "seed" else "")
             for name, value in perturbation.items()]  # fmt: skip
    return f" | perturbed: {', '.join(parts)}"


def run_eval(run_dir: Path, which: str = "best", device: str = "auto", as_json=False,
             perturbation=None) -> str:  # fmt: skip
    """The text `convbench eval RUN_DIR [--checkpoint best|last] [--device D] [--json]` prints."""
    report = evaluate_checkpoint(checkpoint_path(run_dir, which), device, perturbation)
    report["run_dir"] = str(run_dir)
    return json.dumps(report, indent=2) if as_json else format_report(report)
