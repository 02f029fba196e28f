"""Testing a run's saved weights again, from the run folder alone (`convbench eval`).

The checkpoint carries the config as composed and what the run settled at its start
(convbench.run.checkpoint.Settled), so the model is rebuilt from its `_target_` (once
convbench.config.trust allows it), the test split is loaded from the dataset config it was
trained with, and the images are normalized, laid out and computed in the run's own statistics,
memory format and precision: the best checkpoint reproduces the run's metrics.json test
accuracy. Perturbed tests go through convbench.run.robustness, as the end of a run does.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from convbench.config.trust import Trust
from convbench.data.batches import Split
from convbench.data.loader import load_splits
from convbench.errors import ConvbenchError
from convbench.files import write_failed
from convbench.monitor.pictures import conv_layers, save_feature_maps
from convbench.run.build import eval_batches
from convbench.run.folder import RunFolder
from convbench.run.lifecycle import load_trained
from convbench.run.robustness import perturbed, robustness, score

log = logging.getLogger("convbench")

FEATURE_MAP_IMAGES = 4  # `convbench eval --feature-maps`: the first test images, drawn


@dataclass
class Loaded:
    """A checkpoint's model with its weights, its config, what its run settled, and the test
    split it was tested on."""

    path: Path
    payload: dict
    cfg: object
    settled: object  # convbench.run.checkpoint.Settled
    model: object
    device: object
    test_split: object
    name: str  # the model as every command names it (RunFolder.model_name)


def load(run_dir: Path, *, which: str, device_name: str, trust: Trust) -> Loaded:
    """Checkpoint `which` ("best" or "last") of the run in `run_dir`, checked (convbench.trust,
    and against the run's .hydra/config.yaml) before its model is built, and the test split
    as it is now."""
    folder = RunFolder(run_dir)
    trained = load_trained(folder, which, trust, device_name=device_name)
    cfg, settled = trained.cfg, trained.settled
    splits = load_splits(cfg.dataset)
    if splits.fingerprint["test"] != settled.fingerprint.get("test"):
        log.warning(
            "the test images of %s are not those the run was tested on (the data changed since): "
            "the numbers below are for the data as it is now",
            cfg.dataset.root or cfg.dataset.name,
        )
    name = folder.model_name(trained.payload["config"].get("model"))
    return Loaded(
        trained.path,
        trained.payload,
        cfg,
        settled,
        trained.model,
        trained.device,
        splits.test,
        name,
    )


def _headline(loaded: Loaded, images: int) -> dict:
    state = loaded.payload.get("state") or {}
    return {
        "checkpoint": str(loaded.path),
        "epoch": state.get("epoch"),
        "best_val_acc": state.get("best_val_acc"),
        "model": loaded.name,
        "class": loaded.cfg.model._target_,
        "dataset": loaded.cfg.dataset.name,
        "device": str(loaded.device),
        "images": images,
    }


def checkpoint_report(
    loaded: Loaded, amounts: dict, *, seed: int, feature_maps: Path | None
) -> dict:
    """The checkpoint tested once, its test images perturbed by `amounts` ({kind: amount}, all
    at once, seeded; empty: the clean test): accuracy, loss, per-class accuracy and the
    confusion matrix. `feature_maps`: also draw the conv stages' activations for the first
    test images, as tested, to that PNG or SVG file."""

    amounts = {kind: value for kind, value in amounts.items() if value}
    result = score(
        loaded.model,
        loaded.cfg,
        loaded.test_split,
        device=loaded.device,
        settled=loaded.settled,
        amounts=amounts,
        seed=seed,
    )
    if feature_maps is not None:
        _save_feature_maps(loaded, amounts, seed=seed, path=feature_maps)
    classes = list(loaded.cfg.dataset.classes)
    return {
        **_headline(loaded, int(result["confusion"].sum())),
        "test_acc": result["acc"],
        "test_loss": result["loss"],
        "perturbation": {**amounts, "seed": seed} if amounts else None,
        "per_class": per_class_accuracy(result["confusion"], classes),
        "confusion": result["confusion"].tolist(),
        **({"feature_maps": str(feature_maps)} if feature_maps is not None else {}),
    }


def robustness_report(loaded: Loaded, amounts: dict, *, seed: int, feature_maps) -> dict:
    """The checkpoint tested under each value of each perturbation in `amounts` (kind ->
    values), one at a time, as a run's `robustness` block does; the rows under "results".
    `feature_maps`: as `checkpoint_report`, for the unperturbed images."""

    rows = robustness(
        loaded.model,
        loaded.cfg,
        loaded.test_split,
        device=loaded.device,
        settled=loaded.settled,
        amounts=amounts,
        seed=seed,
    )
    if feature_maps is not None:
        _save_feature_maps(loaded, {}, seed=seed, path=feature_maps)
    return {
        **_headline(loaded, len(loaded.test_split)),
        "seed": seed,
        "results": rows,
        **({"feature_maps": str(feature_maps)} if feature_maps is not None else {}),
    }


def _save_feature_maps(loaded: Loaded, amounts: dict, *, seed: int, path: Path) -> None:
    """The activations of the model's conv stages for the first test images (perturbed by
    `amounts` first, if any), normalized as the model sees them, drawn to `path` (PNG or SVG
    by its suffix). Refused before any folder is made when the model has no conv layer."""

    if not conv_layers(loaded.model):
        raise ConvbenchError(
            f"--feature-maps {path}: {loaded.cfg.model._target_} has no conv layer to draw. "
            "Leave out --feature-maps for this run."
        )
    # The whole split is perturbed, then cut: an image's draws depend on its place in the split.
    split = perturbed(loaded.test_split, amounts, seed) if amounts else loaded.test_split
    first = Split(split.images[:FEATURE_MAP_IMAGES], split.labels[:FEATURE_MAP_IMAGES])
    batches = eval_batches(loaded.cfg, first, device=loaded.device, settled=loaded.settled)
    images, _ = next(batches.epoch(0))  # [4, C, S, S]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_feature_maps(loaded.model, images, path)
    except OSError as exc:
        raise write_failed(
            "the feature maps",
            path,
            exc,
            kept="The evaluation itself is done.",
            advice="Choose another file.",
        ) from None


def per_class_accuracy(confusion, classes: list[str]) -> list[dict]:
    """One dict per true class (a row of the confusion matrix): images, correct, accuracy."""
    rows = []
    for index, counts in enumerate(confusion.tolist()):
        images, correct = sum(counts), counts[index]
        name = classes[index] if index < len(classes) else str(index)
        accuracy = correct / images if images else None
        rows.append({"class": name, "images": images, "correct": correct, "acc": accuracy})
    return rows
