"""Testing saved weights again, from the run folder alone.

The checkpoint carries the resolved config, so the model is rebuilt from its `_target_` and the
test split is loaded from the dataset config it was trained with (the same `dataset.root` or
data_dir, normalization and image size). Evaluation uses the run's eval batch size, memory format
and precision, so the best checkpoint reproduces the run's metrics.json test accuracy.
"""

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
    from convbench.build import resolve_device

    try:
        return resolve_device(name)
    except ConvbenchError:
        raise ConvbenchError(
            f"--device {name}: this machine has no {name} device that torch can use. "
            "Use --device auto (the best available) or --device cpu."
        ) from None


def _perturbed(test_split, perturbation: dict):
    from convbench.data import Split
    from convbench.data.perturb import perturb

    images = perturb(
        test_split.images,
        shift_pixels=perturbation.get("shift", 0),
        occlude_side=perturbation.get("occlude", 0),
        clutter_side=perturbation.get("clutter", 0),
        seed=perturbation.get("seed", 0),
    )
    return Split(images, test_split.labels)


def evaluate_checkpoint(path: Path, device_name: str = "auto", perturbation=None) -> dict:
    """Rebuild the model of checkpoint `path`, load its weights, test it; returns the report.

    `perturbation` (keys shift, occlude, clutter, seed; see convbench.data.perturb) alters the
    test images first, the same way for every model, to measure tolerance to them.
    """
    from omegaconf import OmegaConf

    from convbench.build import build_model, engine_options, eval_batches
    from convbench.checkpoint import load_checkpoint
    from convbench.data import load_splits
    from convbench.engine import evaluate

    payload = load_checkpoint(path)
    cfg = OmegaConf.create(payload["config"])
    data, trainer = cfg.dataset, cfg.trainer
    device = _device(device_name)
    model = build_model(cfg, device, trainer.channels_last)
    _load_weights(model, payload, path)
    test_split = load_splits(data)["test"]
    perturbation = {k: v for k, v in (perturbation or {}).items() if v} or None
    if perturbation:
        test_split = _perturbed(test_split, perturbation)
    batches = eval_batches(cfg, test_split, device)
    result = evaluate(
        model,
        batches,
        _loss_fn(),
        num_classes=data.num_classes,
        autocast_dtype=engine_options(trainer).autocast_dtype,
    )
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


def _loss_fn():
    from torch import nn

    return nn.CrossEntropyLoss()


def per_class_accuracy(confusion, classes: list[str]) -> list[dict]:
    """One dict per true class (a row of the confusion matrix): images, correct, accuracy."""
    rows = []
    for index, counts in enumerate(confusion.tolist()):
        images, correct = sum(counts), counts[index]
        name = classes[index] if index < len(classes) else str(index)
        accuracy = correct / images if images else None
        rows.append({"class": name, "images": images, "correct": correct, "acc": accuracy})
    return rows
