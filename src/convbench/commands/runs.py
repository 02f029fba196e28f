"""`convbench runs [DIR]`: every run under DIR (default outputs/) as one table row, or JSON.

Rows come from the run folders' files (convbench.run.folder): no torch, so listing is fast.
"""

import json
from datetime import datetime
from pathlib import Path

import typer

from convbench.analysis.tables import fitted_table
from convbench.errors import ConvbenchError

# The run folder comes last: sweep folders have long names, and the others stay aligned.
COLUMNS = ("When", "Model", "Dataset", "Overrides", "Epochs", "Best val", "Test", "Status", "Run")
NUMERIC = ("Epochs", "Best val", "Test")
OVERRIDES_WIDTH = 48  # the table cuts longer override lists; --json has them whole
# Left out, in this order, on a terminal too narrow for every column (the run stays whole).
NARROW_DROPS = ("Overrides", "Dataset", "When", "Best val")


def runs(
    root: Path = typer.Argument(
        Path("outputs"), metavar="DIR", help="Folder of runs (searched recursively)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the runs under DIR (default outputs/): start time, folder, model, dataset, overrides,
    epochs done, best validation and test accuracy, status (running, finished, failed,
    interrupted)."""
    from convbench.analysis.runs import list_runs

    try:
        rows = list_runs(root)
    except FileNotFoundError:
        raise ConvbenchError(
            f"{root} is not a folder. Runs are written to outputs/ in the folder where "
            "`convbench train` was started: run `convbench runs` from there, or pass the folder "
            "(`convbench runs path/to/outputs`)."
        ) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(format_runs(rows) if rows else f"No runs under {root}.")


def _accuracy(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cells(row: dict) -> tuple[str, ...]:
    overrides = " ".join(row["overrides"]) or "-"
    if len(overrides) > OVERRIDES_WIDTH:
        overrides = overrides[: OVERRIDES_WIDTH - 3] + "..."
    epoch = "?" if row["epoch"] is None else str(row["epoch"])
    epochs = "?" if row["epochs"] is None else str(row["epochs"])
    started = datetime.fromisoformat(row["started"]).strftime("%Y-%m-%d %H:%M")
    return (
        started,
        row["model"] or "?",
        row["dataset"] or "?",
        overrides,
        f"{epoch}/{epochs}",
        _accuracy(row["best_val_acc"]),
        _accuracy(row["test_acc"]),
        row["status"],
        row["run"],
    )


def format_runs(rows: list[dict]) -> str:
    """Aligned plain columns (pipes well into grep and less), then the errors of failed runs."""
    lines = fitted_table(
        COLUMNS,
        [_cells(row) for row in rows],
        right=NUMERIC,
        keep=("Run",),
        drop=NARROW_DROPS,
        below="Run",
    )
    failures = [
        f"  {row['run']}: {' '.join(str(row['error']).split())}"
        for row in rows
        if row["error"] and row["status"] == "failed"
    ]
    if failures:
        lines += ["", "Errors:", *failures]
    return "\n".join(lines)
