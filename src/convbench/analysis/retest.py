"""Testing saved weights again, from the run folder alone.

The checkpoint carries the resolved config, so the model is rebuilt from its `_target_` and the
test split is loaded from the dataset config it was trained with (the same `dataset.root` or
data_dir, normalization and image size). Evaluation uses the run's eval batch size, memory format
and precision, so the best checkpoint reproduces the run's metrics.json test accuracy.
"""

from dataclasses import dataclass
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
    from convbench.run.build import resolve_device

    try:
        return resolve_device(name)
    except ConvbenchError:
        raise ConvbenchError(
            f"--device {name}: this machine has no {name} device that torch can use. "
            "Use --device auto (the best available) or --device cpu."
        ) from None


# The perturbations of convbench.data.perturb, in the order it applies them, and their units.
KINDS = ("shift", "occlude", "clutter", "illumination")
UNITS = {"shift": "px", "occlude": "px", "clutter": "px", "illumination": "strength"}
FEATURE_MAP_IMAGES = 4  # `convbench eval --feature-maps`: the first test images, drawn


def amount_key(value) -> str:
    """A perturbation amount as metrics.json's keys and the tables show it: 2, 0.5, 1 (a whole
    number without ".0", whether it came as an int or a float)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _perturbed(test_split, perturbation: dict):
    from convbench.data import Split
    from convbench.data.perturb import perturb

    images = perturb(
        test_split.images,
        shift_pixels=perturbation.get("shift", 0),
        occlude_side=perturbation.get("occlude", 0),
        clutter_side=perturbation.get("clutter", 0),
        illumination=perturbation.get("illumination", 0.0),
        seed=perturbation.get("seed", 0),
    )
    return Split(images, test_split.labels)


def evaluate_weights(model, cfg, test_split, device, perturbation: dict | None = None) -> dict:
    """Test `model` (its weights loaded) on `test_split` (uint8, on the host), perturbed first by
    `perturbation` (keys shift, occlude, clutter, illumination, seed; see
    convbench.data.perturb), in the run's eval batches and precision: `engine.evaluate`'s dict.

    The one place that tests weights on perturbed images: `convbench eval` and the end of a run
    (`robustness`) both come here, so they agree to the last digit.
    """
    from convbench.engine import evaluate
    from convbench.run.build import AUTOCAST_DTYPES, eval_batches

    if perturbation:
        test_split = _perturbed(test_split, perturbation)
    return evaluate(
        model,
        eval_batches(cfg, test_split, device),
        _loss_fn(),
        num_classes=cfg.dataset.num_classes,
        autocast_dtype=AUTOCAST_DTYPES[cfg.trainer.precision],
    )


def robustness(model, cfg, test_split, device, amounts: dict, seed: int = 0) -> list[dict]:
    """Accuracy and loss under each value of each perturbation in `amounts` (kind -> values),
    one perturbation at a time, each seeded with `seed`: one row per value, {kind, value,
    test_acc, test_loss}. A value of 0 is the clean test."""
    rows = []
    for kind in KINDS:
        for value in dict.fromkeys(amounts.get(kind) or ()):  # in order, without repeats
            result = evaluate_weights(model, cfg, test_split, device, {kind: value, "seed": seed})
            rows.append(
                {
                    "kind": kind,
                    "value": value,
                    "test_acc": result["acc"],
                    "test_loss": result["loss"],
                }
            )
    return rows


def by_kind(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Robustness rows as metrics.json keeps them: {"shift": {"0": 0.91, "2": 0.70}, ...}."""
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        found.setdefault(row["kind"], {})[amount_key(row["value"])] = row["test_acc"]
    return found


@dataclass
class _Loaded:
    """A checkpoint's model with its weights, its config and the test split it was run on."""

    path: Path
    payload: dict
    cfg: object
    model: object
    device: object
    test_split: object


def _load(path: Path, device_name: str, trust) -> _Loaded:
    """The checkpoint at `path`, its config checked against `trust` (convbench.config.trust) before
    its model is built."""
    from omegaconf import OmegaConf

    from convbench.config.auto import settled_channels_last
    from convbench.config.trust import check_config
    from convbench.data import load_splits
    from convbench.run.build import build_model
    from convbench.run.checkpoint import load_checkpoint
    from convbench.run.lifecycle import check_belongs_to_run

    payload = load_checkpoint(path)
    check_config(payload.get("config"), trust, str(path))
    if path.parent.name == "checkpoints":  # in a run folder: its .hydra/ must agree
        check_belongs_to_run(path.parent.parent, payload)
    cfg = OmegaConf.create(payload["config"])
    device = _device(device_name)
    model = build_model(cfg, device, settled_channels_last(cfg.trainer.channels_last))
    _load_weights(model, payload, path)
    test_split = load_splits(cfg.dataset)["test"]
    return _Loaded(path, payload, cfg, model, device, test_split)


def _headline(loaded: _Loaded, images: int) -> dict:
    state = loaded.payload.get("state") or {}
    return {
        "checkpoint": str(loaded.path),
        "epoch": state.get("epoch"),
        "best_val_acc": state.get("best_val_acc"),
        "model": loaded.cfg.model._target_,
        "dataset": loaded.cfg.dataset.name,
        "device": str(loaded.device),
        "images": images,
    }


def evaluate_checkpoint(
    path: Path,
    device_name: str = "auto",
    perturbation=None,
    feature_maps: Path | None = None,
    *,
    trust,
) -> dict:
    """Rebuild the model of checkpoint `path`, load its weights, test it; returns the report.

    `perturbation` (keys shift, occlude, clutter, illumination, seed; see
    convbench.data.perturb) alters the test images first, all at once, the same way for every
    model, to measure tolerance to them. `feature_maps`: also draw the conv stages' activations
    for the first 4 test images, as tested, to that PNG or SVG file.
    """
    loaded = _load(path, device_name, trust)
    perturbation = {k: v for k, v in (perturbation or {}).items() if v} or None
    result = evaluate_weights(
        loaded.model, loaded.cfg, loaded.test_split, loaded.device, perturbation
    )
    if feature_maps is not None:
        _save_feature_maps(loaded, perturbation, feature_maps)
    data = loaded.cfg.dataset
    return {
        **_headline(loaded, int(result["confusion"].sum())),
        "test_acc": result["acc"],
        "test_loss": result["loss"],
        "perturbation": perturbation,
        "per_class": per_class_accuracy(result["confusion"], list(data.classes)),
        "confusion": result["confusion"].tolist(),
        **({"feature_maps": str(feature_maps)} if feature_maps is not None else {}),
    }


def checkpoint_robustness(
    path: Path,
    device_name: str,
    amounts: dict,
    seed: int = 0,
    feature_maps: Path | None = None,
    *,
    trust,
) -> dict:
    """Test checkpoint `path` under each value of each perturbation in `amounts` (kind ->
    values), one at a time, as a run's `evaluate` block does; returns the report, its rows under
    "results". `feature_maps`: as `evaluate_checkpoint`, for the unperturbed images."""
    loaded = _load(path, device_name, trust)
    rows = robustness(loaded.model, loaded.cfg, loaded.test_split, loaded.device, amounts, seed)
    if feature_maps is not None:
        _save_feature_maps(loaded, None, feature_maps)
    return {
        **_headline(loaded, len(loaded.test_split)),
        "seed": seed,
        "results": rows,
        **({"feature_maps": str(feature_maps)} if feature_maps is not None else {}),
    }


def _save_feature_maps(loaded: _Loaded, perturbation: dict | None, path: Path) -> None:
    """The activations of the model's conv stages for the first 4 test images (perturbed by
    `perturbation` first, if any), normalized as the model sees them, drawn to `path` (PNG or
    SVG by its suffix)."""
    from convbench.data import Split
    from convbench.files import write_failed
    from convbench.monitor.pictures import save_feature_maps
    from convbench.run.build import eval_batches

    # The whole split is perturbed, then cut: an image's draws depend on its place in the split.
    split = _perturbed(loaded.test_split, perturbation) if perturbation else loaded.test_split
    first = Split(split.images[:FEATURE_MAP_IMAGES], split.labels[:FEATURE_MAP_IMAGES])
    images, _ = next(eval_batches(loaded.cfg, first, loaded.device).epoch(0))  # [4, C, S, S]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_feature_maps(loaded.model, images, path)
    except OSError as exc:
        raise write_failed(
            "the feature maps", path, exc, "The evaluation itself is done.", "Choose another file."
        ) from None
    except ValueError as exc:  # no conv layer to draw, or a suffix it cannot write
        raise ConvbenchError(
            f"--feature-maps {path}: {exc}. Leave out --feature-maps for this run."
        ) from None


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
