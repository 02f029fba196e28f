"""`convbench train OVERRIDES... [-m]`: train a model, or sweep (convbench.launch.app)."""

import typer

QUIET_FLAGS = ("-q", "--quiet")
QUIET_OVERRIDES = ("trainer.progress=false", "++hydra.job_logging.handlers.console.level=WARNING")


def train(ctx: typer.Context) -> None:
    """Train a model. Arguments are Hydra overrides: model=resnet dataset=cifar10 optimizer.lr=0.1,
    -m for a sweep, --cfg job to print the config, --help for every group and key."""
    from convbench.monitor.console import status

    with status("starting: loading PyTorch and Hydra"):  # seconds of a blank screen otherwise
        from convbench.launch.app import train as run_train

    quiet = any(arg in QUIET_FLAGS for arg in ctx.args)
    outcome = run_train(with_quiet_overrides(ctx.args))
    if quiet and outcome.sweep_dir is None:  # the result line, which -q keeps
        from convbench.monitor.console import fitted
        from convbench.run.folder import RunFolder
        from convbench.run.lifecycle import result_line

        for folder, metrics in outcome.metrics.items():
            if metrics:
                line, short = (result_line(metrics, RunFolder(folder), short=s) for s in (0, 1))
                typer.echo(fitted(line, short))
    if outcome.failed_jobs:
        typer.echo(f"{len(outcome.failed_jobs)} job(s) of the sweep failed:", err=True)
        for job in outcome.failed_jobs:
            error = job["error"] or "no message"
            typer.echo(f"  job {job['num']} ({job['run_dir']}): {error}", err=True)
    if outcome.sweep_dir is not None and outcome.sweep_dir.is_dir():
        typer.echo(sweep_block(outcome.sweep_dir))
    raise typer.Exit(outcome.exit_code)


def sweep_block(folder) -> str:
    """The end of a sweep: where it is, how its jobs ended, the best group by validation
    accuracy, and the command to run next."""
    from convbench.analysis.compare import shown, sweep_answer
    from convbench.monitor.console import fitted
    from convbench.run.folder import shown_path

    answer = sweep_answer(folder)
    where = shown_path(folder)
    states = ", ".join(f"{count} {state}" for state, count in sorted(answer.states.items()))
    lines = [f"Sweep {where}: {sum(answer.states.values())} job(s), {states}."]
    best = answer.best
    if best is not None:
        label = " ".join(f"{key}={shown(best, key)}" for key in answer.keys) or "every job"
        val, test = best.spread("best_val_acc"), best.spread("test_acc")
        numbers = f"best val {val.mean:.4f}" + (f", test {test.mean:.4f}" if test else "")
        lines.append(f"Best by validation accuracy: {label} ({numbers}, n={len(best.runs)}).")
    command = f"convbench compare {where} --html {where}/report.html"
    broken = f"Next:\n  convbench compare {where} \\\n    --html {where}/report.html"
    lines.append(fitted(f"Next: {command}", broken))
    return "\n".join(lines)


def with_quiet_overrides(args: list[str]) -> list[str]:
    """`-q/--quiet`: no progress bar, only warnings and errors on the console; train.log in the
    run folder still gets every line."""
    rest = [arg for arg in args if arg not in QUIET_FLAGS]
    return [*rest, *QUIET_OVERRIDES] if len(rest) < len(args) else rest
