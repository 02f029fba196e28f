"""`convbench resume RUN_DIR | SWEEP_DIR`: continue a stopped run, or a whole sweep, in place."""

from pathlib import Path

import typer


def resume(
    run_dir: str = typer.Argument(
        ...,
        metavar="RUN_DIR|SWEEP_DIR|STUDY_DIR",
        help="A run folder (outputs/2026-01-31/12-00-00-lenet-ab12cd), a sweep folder "
        "(outputs/multirun/...) or a study folder (outputs/tune/...).",
    ),
    config_dirs: list[Path] = typer.Option(
        [],
        "--config-dir",
        metavar="DIR",
        help="A config folder whose YAML names your own model class (repeatable), as given to "
        "train: a run or sweep folder alone may name only convbench's models.",
    ),
) -> None:
    """Continue a stopped run in its own folder from checkpoints/last.pt: same data order, same
    random state, TensorBoard curves continuing. Needs nothing but the run folder. A run that
    already finished is left as it is (exit 0), so requeue scripts can always call resume.
    Given a sweep's folder, finishes the sweep: finished jobs are skipped, stopped ones continue
    from their last.pt, jobs that never started are launched with their recorded overrides.
    Given a study's folder (convbench tune), finishes the study: its stopped trials continue
    from last.pt (one that died before its first checkpoint is retried with the same values),
    then new trials run until it holds tune.n_trials."""
    from convbench.commands.eval import user_trust
    from convbench.launch.sweeps import is_sweep_dir
    from convbench.tune.study import is_study_dir

    folder = Path(run_dir)
    if is_study_dir(folder):
        from convbench.tune.search import resume as resume_study

        raise typer.Exit(
            resume_study(folder, cwd=Path.cwd(), config_dirs=[str(d) for d in config_dirs])
        )
    trust = user_trust(config_dirs)
    if is_sweep_dir(folder):
        raise typer.Exit(resume_sweep(folder, config_dirs))
    resume_run(folder, trust, config_dirs)


def resume_run(folder: Path, trust, config_dirs: list[Path]) -> None:
    from convbench.launch.distributed import launch_local
    from convbench.monitor.console import log_to_run_folder
    from convbench.run.folder import RunFolder
    from convbench.run.lifecycle import read_checkpoint
    from convbench.run.lifecycle import resume as resume_in_place
    from convbench.run.ranks import join, leave, place

    here, run = place(), RunFolder(folder)
    if run.last.is_file():
        # Before anything is written (train.log, the lock): the checkpoint may not choose code.
        payload = read_checkpoint(run, "last", trust)
        if run.is_finished():  # nothing to do; nothing written, not even to train.log
            metrics = run.metrics()
            epochs, accuracy = metrics.get("epochs", "?"), metrics.get("test_acc", float("nan"))
            typer.echo(
                f"{folder} already finished all {epochs} epochs (test acc {accuracy:.4f}); "
                "nothing to do."
            )
            return
        processes = len(payload.get("ranks") or [None])
        if processes > 1 and not here.is_distributed:
            # A run of several processes continues on as many, started as `train` started them.
            folders = [arg for path in config_dirs for arg in ("--config-dir", str(path))]
            raise typer.Exit(launch_local(processes, ["resume", str(folder), *folders]))
    join(here)
    if not here.is_main:  # rank 0 alone writes the run folder, train.log included
        resume_in_place(run, trust)
    else:
        with log_to_run_folder(run.log_file):
            resume_in_place(run, trust)
    leave()


def resume_sweep(sweep_dir: Path, config_dirs: list[Path]) -> int:
    """Run the sweep again into its folder (the sweeper skips finished jobs, each job continues
    from its checkpoint), then list every job's outcome. Returns the exit code. The sweep's
    record is checked first (convbench.launch.sweeps.relaunch_arguments): it may not choose code."""
    from convbench.launch.app import train
    from convbench.launch.sweeps import job_outcomes, relaunch_arguments

    arguments = relaunch_arguments(sweep_dir, config_dirs)
    before = {str(job["run_dir"]): job["status"] for job in job_outcomes(sweep_dir)}
    try:
        return train(arguments).exit_code
    finally:  # also when a job stops the sweep (in use by another resume, a signal): say where
        typer.echo(f"Sweep {sweep_dir}:")
        for job in job_outcomes(sweep_dir):
            was = before.get(str(job["run_dir"]))
            done = {"finished": "skipped: finished before", None: "started"}.get(was, "resumed")
            accuracy = "" if job["test_acc"] is None else f" test acc {job['test_acc']:.4f}"
            typer.echo(
                f"  job {job['num']}: {job['status']} ({done}){accuracy}  {job['run_dir'].name}"
            )
