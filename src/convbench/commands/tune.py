"""`convbench tune tune=NAME [OVERRIDES...]`: a hyperparameter search (convbench.tune)."""

from pathlib import Path

import typer


def tune(
    ctx: typer.Context,
    config_dirs: list[Path] = typer.Option(
        [],
        "--config-dir",
        metavar="DIR",
        help="A config folder of your own (its tune/, model/ ... files), as for train.",
    ),
) -> None:
    """Search hyperparameters with Optuna: tune=NAME picks a search space from conf/tune/ (or
    your --config-dir), other overrides fix the rest of the config as for train. Every trial is
    an ordinary run in the study folder; the pruner stops hopeless ones after an epoch; the
    study ends with its best trial and the command that trains it on the full budget.
    `convbench resume STUDY_DIR` continues a stopped study."""
    from convbench.tune.search import start

    dirs = [str(d) for d in config_dirs]
    raise typer.Exit(start(list(ctx.args), config_dirs=dirs, cwd=Path.cwd()))
