"""The `convbench` command line: the Typer app, one command per module of convbench.commands.

`convbench train ...` hands everything after `train` to Hydra's own entry point, so overrides,
`-m` multirun, `--cfg job`, `--help`, launchers and sweepers behave exactly as in any Hydra
application. Heavy imports (torch, Hydra) happen inside the commands, which keeps `convbench
--help` fast. `main` applies the error policy of convbench.errors.
"""

import logging
import os
import sys
import traceback

import typer

from convbench import __version__
from convbench.commands import compare, export, predict, resume, runs, summary, tb, train, tune
from convbench.commands import eval as eval_command
from convbench.errors import BUG_REPORT, EXIT_BUG, ConvbenchError, RunInterrupted, TrialPruned

app = typer.Typer(
    name="convbench",
    help="Train, sweep and inspect convolutional networks from Hydra configs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Everything after `train` goes to Hydra untouched, --help included.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}

app.command(
    context_settings=PASS_THROUGH,
    add_help_option=False,
    short_help="Train a model, or a sweep with -m (arguments are Hydra overrides).",
)(train.train)
app.command(
    context_settings=PASS_THROUGH,
    short_help="Search hyperparameters with Optuna: pruned trials, resumable, many workers.",
)(tune.tune)
app.command(short_help="Layers, parameters, MACs and receptive fields of a model or run.")(
    summary.summary
)
app.command(short_help="Serve TensorBoard on the runs, on this machine only.")(tb.tb)
app.command(short_help="List the runs in a folder, with their status and accuracy.")(runs.runs)
app.command(short_help="Group runs over seeds: which setting is better, and by how much.")(
    compare.compare
)
app.command(name="eval", short_help="Test a run's checkpoint again, perturbed if asked.")(
    eval_command.eval_
)
app.command(short_help="Classify new images with a run's weights and its own preprocessing.")(
    predict.predict
)
app.command(short_help="Export a run's model to ONNX or TorchScript, checked against the run.")(
    export.export
)
app.command(short_help="Continue a stopped run, or finish a stopped sweep, in its folder.")(
    resume.resume
)


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


def main() -> None:
    """Console-script entry point, applying the error policy of convbench.errors."""
    # A log line that cannot be written (train.log on a full disk) is dropped, not answered with
    # logging's own traceback on stderr; the write failure itself is reported as one paragraph.
    logging.raiseExceptions = False
    try:
        # The name users type, also under `python -m convbench`: usage lines and the shell
        # completion script (its function and _CONVBENCH_COMPLETE variable) are made from it.
        app(prog_name="convbench")
    except ConvbenchError as err:
        typer.echo(f"Error: {err}", err=True)
        sys.exit(err.exit_code)
    except RunInterrupted as stop:
        # Every rank of a distributed run stops at the same step (convbench.engine), so all of
        # them reach leave()'s barrier; leaving the group before the interpreter's teardown
        # keeps a rank from aborting while its peer still tears down ("terminate called ...").
        from convbench.run.ranks import leave  # torch: imported only when a run was stopped

        leave()
        from convbench.monitor.console import fitted

        command = f"convbench resume {stop.run_dir or 'RUN_DIR'}"
        if stop.saved:
            said = f"Interrupted by {stop.signal_name}; last.pt is saved. Continue with:"
            typer.echo(fitted(f"{said} {command}", f"{said}\n  {command}"), err=True)
        else:
            typer.echo(
                f"Interrupted by {stop.signal_name} before the run's first checkpoint: nothing "
                "was saved, so there is nothing to resume; start the run again.",
                err=True,
            )
        sys.exit(stop.exit_code)
    except TrialPruned as pruned:
        typer.echo(f"The study's pruner stopped this trial: {pruned}.", err=True)
        sys.exit(pruned.exit_code)
    except BrokenPipeError:  # `convbench ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception:
        traceback.print_exc()
        typer.echo(BUG_REPORT, err=True)
        sys.exit(EXIT_BUG)
