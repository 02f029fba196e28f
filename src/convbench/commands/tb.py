"""`convbench tb [DIR]`: TensorBoard on the run folders, on this machine only unless asked."""

import threading
from pathlib import Path

import typer

from convbench.errors import ConvbenchError

LOOPBACK = "127.0.0.1"  # TensorBoard has no authentication: this machine only, unless asked


def tb(
    folder: Path | None = typer.Argument(
        None, metavar="[DIR]", help="Folder of runs (searched recursively; default outputs/)."
    ),
    logdir: Path | None = typer.Option(
        None, "--logdir", help="The same as DIR, as TensorBoard itself names it."
    ),
    port: int | None = typer.Option(
        None, help="Port; default 6006 or the next free one after it; 0 = any free port."
    ),
    host: str = typer.Option(
        LOOPBACK, help="Address to listen on; 0.0.0.0 serves the runs to the whole network."
    ),
) -> None:
    """Start TensorBoard on the runs in DIR (default outputs/), print its URL, serve until
    Ctrl-C. Listens on this machine only unless --host says otherwise."""
    if folder is not None and logdir is not None and folder != logdir:
        raise ConvbenchError(f"DIR {folder} and --logdir {logdir} name two folders: give one.")
    logdir = folder or logdir or Path("outputs")
    if port is not None and not 0 <= port <= 65535:
        raise ConvbenchError(
            f"--port {port} is not a port: use a number from 1 to 65535, or 0 for any free one."
        )
    from convbench.analysis.board import launch, logged_runs

    url = launch(logdir, host, port)
    typer.echo(f"TensorBoard on {logdir} ({logged_runs(logdir)} runs logged so far): {url}")
    if host != LOOPBACK:
        typer.echo(f"Listening on {host}: anyone who can reach this address sees the runs.")
    typer.echo("Press Ctrl-C to stop.")
    try:
        threading.Event().wait()  # only a signal ends this wait; the server thread is a daemon
    except KeyboardInterrupt:
        typer.echo("TensorBoard stopped.")
