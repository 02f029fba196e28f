"""`convbench train OVERRIDES... [-m]`: train a model, or sweep (convbench.launch.app)."""

import typer

QUIET_FLAGS = ("-q", "--quiet")
QUIET_OVERRIDES = ("trainer.progress=false", "++hydra.job_logging.handlers.console.level=WARNING")


def train(ctx: typer.Context) -> None:
    """Train a model. Arguments are Hydra overrides: model=resnet dataset=cifar10 optimizer.lr=0.1,
    -m for a sweep, --cfg job to print the config, --help for every group and key."""
    from convbench.launch.app import train as run_train

    outcome = run_train(with_quiet_overrides(ctx.args))
    if outcome.failed_jobs:
        typer.echo(f"{len(outcome.failed_jobs)} job(s) of the sweep failed:", err=True)
        for job in outcome.failed_jobs:
            error = job["error"] or "no message"
            typer.echo(f"  job {job['num']} ({job['run_dir']}): {error}", err=True)
    raise typer.Exit(outcome.exit_code)


def with_quiet_overrides(args: list[str]) -> list[str]:
    """`-q/--quiet`: no progress bar, only warnings and errors on the console; train.log in the
    run folder still gets every line."""
    rest = [arg for arg in args if arg not in QUIET_FLAGS]
    return [*rest, *QUIET_OVERRIDES] if len(rest) < len(args) else rest
