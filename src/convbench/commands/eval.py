"""`convbench eval RUN_DIR`: test a run's checkpoint again, from the run folder alone."""

import json
from pathlib import Path
from typing import Literal

import typer

from convbench.tables import render_table


def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder (see `convbench runs`)."),
    checkpoint: Literal["best", "last"] = typer.Option(
        "best", help="best.pt (best validation accuracy) or last.pt (latest epoch)."
    ),
    device: Literal["auto", "cpu", "cuda", "mps"] = typer.Option("auto", help="Where to run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    shift: int = typer.Option(0, min=0, help="Move every test image N pixels (random direction)."),
    occlude: int = typer.Option(0, min=0, help="Blank an N x N square of every test image."),
    clutter: int = typer.Option(0, min=0, help="Paste an N x N piece of another test image."),
    seed: int = typer.Option(0, help="Seed of the perturbations (same images for every run)."),
) -> None:
    """Test a run's checkpoint again: accuracy, loss and per-class accuracy on the test set.
    Needs nothing but the run folder: the checkpoint carries its config. --shift, --occlude and
    --clutter perturb the test images to measure a model's tolerance to them."""
    from convbench.console import log_to_console
    from convbench.evaluation import checkpoint_path, evaluate_checkpoint

    perturbation = {"shift": shift, "occlude": occlude, "clutter": clutter}
    if any(perturbation.values()):
        perturbation["seed"] = seed
    with log_to_console():
        report = evaluate_checkpoint(checkpoint_path(run_dir, checkpoint), device, perturbation)
    report["run_dir"] = str(run_dir)
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


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
    rows = [
        (row["class"], str(row["images"]), str(row["correct"]), _accuracy(row["acc"]))
        for row in report["per_class"]
    ]
    columns = ("Class", "Images", "Correct", "Acc")
    return "\n".join(header + render_table(columns, rows, right=columns[1:]))


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _perturbation_text(perturbation: dict | None) -> str:
    if not perturbation:
        return ""
    parts = [
        f"{name} {value}" + (" px" if name != "seed" else "")
        for name, value in perturbation.items()
    ]
    return f" | perturbed: {', '.join(parts)}"
