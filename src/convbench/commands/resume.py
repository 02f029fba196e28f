"""`convbench resume RUN_DIR`: continue a stopped run in its own folder."""

from pathlib import Path

import typer


def resume(
    run_dir: str = typer.Argument(
        ..., help="The run folder, e.g. outputs/2026-01-31/12-00-00-ab12cd"
    ),
) -> None:
    """Continue a stopped run in its own folder from checkpoints/last.pt: same data order, same
    random state, TensorBoard curves continuing. Needs nothing but the run folder."""
    from convbench.console import log_to_run_folder
    from convbench.lifecycle import resume as resume_run

    folder = Path(run_dir)
    with log_to_run_folder(folder):
        resume_run(folder)
