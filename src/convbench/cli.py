"""The `convbench` command line.

Typer owns the sub-commands; `convbench train ...` hands everything after `train` to Hydra's own
entry point (see `hydra_app.py`), so overrides, `-m` multirun, `--cfg job`, `--help`, launchers
and sweepers behave exactly as in any Hydra application. Heavy imports (torch, Hydra) happen
inside the commands, which keeps `convbench --help` fast.
"""

import sys
from pathlib import Path
from typing import Literal

import typer

from convbench import __version__
from convbench.errors import ConvbenchError, RunInterrupted

app = typer.Typer(
    name="convbench",
    help="Train, sweep and inspect convolutional networks from Hydra configs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Everything after the sub-command goes to Hydra untouched, --help included.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, sweep and inspect convolutional networks from Hydra configs."""


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a model. Arguments are Hydra overrides: model=resnet dataset=cifar10 optimizer.lr=0.1,
    -m for a sweep, --cfg job to print the config, --help for every group and key."""
    from convbench.hydra_app import run_train

    raise typer.Exit(run_train(_quiet_overrides(ctx.args)))


QUIET_OVERRIDES = ["trainer.progress=false", "++hydra.job_logging.handlers.console.level=WARNING"]


def _quiet_overrides(args: list[str]) -> list[str]:
    """`-q/--quiet`: no progress bar, only warnings and errors on the console; train.log in the
    run folder still gets every line."""
    quiet = [a for a in args if a in ("-q", "--quiet")]
    rest = [a for a in args if a not in ("-q", "--quiet")]
    return rest + QUIET_OVERRIDES if quiet else rest


@app.command()
def summary(
    overrides: list[str] = typer.Argument(
        None, help="Hydra overrides, as for train: model=mlp dataset=cifar10 dataset.image_size=64"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    config_dir: Path | None = typer.Option(
        None, help="An extra config folder, as for train (e.g. your own model/*.yaml)."
    ),
) -> None:
    """Print each layer's output shape, parameters, MACs and receptive field, then the totals.
    The model is built on the meta device: no weights are allocated, whatever its size."""
    from convbench.summary import run_summary

    typer.echo(run_summary(overrides or [], as_json=as_json, extra_config_dir=config_dir))


@app.command()
def tb(
    logdir: Path = typer.Argument(
        Path("outputs"), metavar="DIR", help="Folder of runs (searched recursively)."
    ),
    port: int | None = typer.Option(
        None, help="Port; default 6006 or the next free one after it; 0 = any free port."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on; 0.0.0.0 serves the runs to the whole network."
    ),
) -> None:
    """Start TensorBoard on the runs in DIR (default outputs/), print its URL, serve until
    Ctrl-C. Listens on this machine only unless --host says otherwise."""
    from convbench.tensorboard_cmd import serve

    serve(logdir, host=host, port=port)


@app.command()
def runs(
    root: Path = typer.Argument(
        Path("outputs"), metavar="DIR", help="Folder of runs (searched recursively)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the runs under DIR (default outputs/): start time, folder, model, dataset, overrides,
    epochs done, best validation and test accuracy, status (running, finished, failed,
    interrupted)."""
    from convbench.runs import run_runs

    typer.echo(run_runs(root, as_json=as_json))


@app.command(name="eval")
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
    from convbench.evaluate_cmd import run_eval

    perturbation = {"shift": shift, "occlude": occlude, "clutter": clutter}
    if any(perturbation.values()):
        perturbation["seed"] = seed
    typer.echo(run_eval(run_dir, checkpoint, device, as_json=as_json, perturbation=perturbation))


@app.command()
def resume(
    run_dir: str = typer.Argument(
        ..., help="The run folder, e.g. outputs/2026-01-31/12-00-00-ab12cd"
    ),
) -> None:
    """Continue a stopped run in its own folder from checkpoints/last.pt: same data order, same
    random state, TensorBoard curves continuing. Needs nothing but the run folder."""
    from pathlib import Path

    from convbench.console import log_to_run_folder
    from convbench.run import resume as resume_run

    with log_to_run_folder(Path(run_dir)):
        resume_run(Path(run_dir))


def main() -> None:
    """Console-script entry point: user errors become one paragraph and their exit code (2 for
    bad input, 4 for a diverged loss), a honoured stop signal exits 3 (see convbench.errors)."""
    try:
        # The name users type, also under `python -m convbench`: usage lines and the shell
        # completion script (its function and _CONVBENCH_COMPLETE variable) are made from it.
        app(prog_name="convbench")
    except ConvbenchError as err:
        typer.echo(f"Error: {err}", err=True)
        sys.exit(err.exit_code)
    except RunInterrupted as stop:
        where = f" convbench resume {stop.run_dir}" if stop.run_dir else " convbench resume RUN_DIR"
        typer.echo(
            f"Interrupted by {stop.signal_name}; last.pt is saved. Continue with:{where}", err=True
        )
        sys.exit(stop.exit_code)
