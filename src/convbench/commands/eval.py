"""`convbench eval RUN_DIR`: test a run's checkpoint again, from the run folder alone."""

import dataclasses
import json
from pathlib import Path
from typing import Literal

import typer

from convbench.analysis.tables import fitted_table
from convbench.errors import ConvbenchError


def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder (see `convbench runs`)."),
    checkpoint: Literal["best", "last"] = typer.Option(
        "best", help="best.pt (best validation accuracy) or last.pt (latest epoch)."
    ),
    device: Literal["auto", "cpu", "cuda", "mps"] = typer.Option("auto", help="Where to run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    shift: str | None = typer.Option(
        None, metavar="N[,N...]", help="Move every test image N pixels (random direction)."
    ),
    occlude: str | None = typer.Option(
        None, metavar="N[,N...]", help="Blank an N x N square of every test image."
    ),
    clutter: str | None = typer.Option(
        None, metavar="N[,N...]", help="Paste an N x N piece of another test image."
    ),
    illumination: str | None = typer.Option(
        None,
        metavar="S[,S...]",
        help="Random gamma, contrast and brightness changes of strength S in [0, 1].",
    ),
    seed: int = typer.Option(0, help="Seed of the perturbations (same images for every run)."),
    feature_maps: Path | None = typer.Option(
        None,
        "--feature-maps",
        metavar="FILE",
        help="Also draw the conv stages' activations for the first 4 test images (as tested) "
        "to FILE, a .png or .svg.",
    ),
    config_dirs: list[Path] = typer.Option(
        [],
        "--config-dir",
        metavar="DIR",
        help="A config folder whose YAML names your own model class (repeatable): a run "
        "folder alone may name only convbench's models.",
    ),
) -> None:
    """Test a run's checkpoint again: accuracy, loss and per-class accuracy on the test set.
    Needs nothing but the run folder: the checkpoint carries its config. --shift, --occlude,
    --clutter and --illumination perturb the test images to measure a model's tolerance to
    them; given one value each they apply together, and a comma-separated list in any of them
    (--shift 0,1,2,4) tests each value of each on its own, one line per value, as a run's
    `evaluate` block does."""
    _check_seed(seed)
    given = {"shift": shift, "occlude": occlude, "clutter": clutter, "illumination": illumination}
    amounts = {kind: parse_amounts(kind, text) for kind, text in given.items() if text is not None}
    if feature_maps is not None and feature_maps.suffix.lower() not in (".png", ".svg"):
        raise ConvbenchError(
            f"--feature-maps {feature_maps}: the file's suffix chooses the format, and it must be "
            f".png or .svg (e.g. --feature-maps {feature_maps.with_suffix('.png')})."
        )
    from convbench.analysis.retest import checkpoint_report, load, robustness_report
    from convbench.monitor.console import log_to_console

    trust = user_trust(config_dirs)
    as_list = any(len(values) > 1 for values in amounts.values())
    with log_to_console():
        loaded = load(run_dir, which=checkpoint, device_name=device, trust=trust)
        if as_list:
            report = robustness_report(loaded, amounts, seed=seed, feature_maps=feature_maps)
        else:
            one_each = {kind: values[0] for kind, values in amounts.items()}
            report = checkpoint_report(loaded, one_each, seed=seed, feature_maps=feature_maps)
    report["run_dir"] = str(run_dir)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(format_robustness(report) if as_list else format_report(report))


def user_trust(config_dirs: list[Path]):
    """The code the user vouches for with --config-dir folders (convbench.config.trust)."""
    from convbench.config.trust import Trust

    for folder in config_dirs:
        if not folder.is_dir():
            raise ConvbenchError(f"--config-dir {folder}: not a folder.")
    return Trust.of_folders(config_dirs)


def parse_amounts(kind: str, text: str) -> list:
    """The values of option --KIND: whole numbers (floats for a strength) within the limits
    of the schema's robustness.KIND, or a ConvbenchError naming the option and the range."""
    from convbench.config.schema import limited_settings
    from convbench.data.kinds import KINDS

    about = KINDS[kind]
    limits, _ = limited_settings()[f"robustness.{kind}"]
    number, what = (int, "whole number") if about.whole else (float, "number")
    bounds = dataclasses.replace(limits, each=False).describe()
    allowed = (
        f"--{kind} takes {what}s {bounds} ({about.meaning}): one value, or a comma-separated "
        f"list to test each value on its own, e.g. --{kind} {about.example}."
    )
    values = []
    for item in text.split(","):
        try:
            value = number(item.strip())
        except ValueError:
            raise ConvbenchError(f"--{kind} {text}: {item!r} is not a {what}. {allowed}") from None
        if not limits.admits(value):
            raise ConvbenchError(f"--{kind} {text}: {item.strip()} is out of range. {allowed}")
        values.append(value)
    return values


def _check_seed(seed: int) -> None:
    from convbench.config.schema import limited_settings

    limits, _ = limited_settings()["robustness.seed"]
    if not limits.admits(seed):
        raise ConvbenchError(f"--seed {seed} is out of range: it must be {limits.describe()}.")


def _headline(report: dict) -> list[str]:
    """The model, data and checkpoint a report is about: its first two lines."""
    epoch = "?" if report["epoch"] is None else report["epoch"]
    return [
        f"{report['model']} on {report['dataset']}: {report['images']:,} test images, "
        f"device {report['device']}",
        f"checkpoint {report['checkpoint']} (epoch {epoch})",
    ]


def format_report(report: dict) -> str:
    """Headline numbers, then an aligned per-class table."""
    header = [
        *_headline(report),
        f"test acc {report['test_acc']:.4f} | test loss {report['test_loss']:.4f}"
        + _perturbation_text(report.get("perturbation")),
        "",
    ]
    rows = [
        (row["class"], str(row["images"]), str(row["correct"]), _accuracy(row["acc"]))
        for row in report["per_class"]
    ]
    columns = ("Class", "Images", "Correct", "Acc")
    lines = header + fitted_table(columns, rows, right=columns[1:])
    return "\n".join(lines + _feature_maps_text(report))


def format_robustness(report: dict) -> str:
    """Headline, then one line per perturbation value: kind, value, accuracy."""
    from convbench.data.kinds import KINDS, amount_key

    header = [
        *_headline(report),
        f"test acc under each perturbation alone (seed {report['seed']})",
        "",
    ]
    rows = [
        (row["kind"], amount_key(row["value"]), KINDS[row["kind"]].unit, f"{row['test_acc']:.4f}")
        for row in report["results"]
    ]
    columns = ("Kind", "Value", "Unit", "Acc")
    lines = header + fitted_table(columns, rows, right=("Value", "Acc"))
    return "\n".join(lines + _feature_maps_text(report))


def _feature_maps_text(report: dict) -> list[str]:
    return [f"\nfeature maps: {report['feature_maps']}"] if report.get("feature_maps") else []


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _perturbation_text(perturbation: dict | None) -> str:
    if not perturbation:
        return ""
    from convbench.data.kinds import KINDS

    parts = [
        f"{name} {value}" + (" px" if name in KINDS and KINDS[name].whole else "")
        for name, value in perturbation.items()
    ]
    return f" | perturbed: {', '.join(parts)}"
