"""TensorBoard on the run folders, served from this process, on this machine only unless asked.

TensorBoard runs through its own program API (`tensorboard.program`), so the port it really bound
(with `port=0`, any free one) is known and can be printed as a URL. It binds to 127.0.0.1 by
default: TensorBoard has no authentication, so serving the runs to the network is something the
user opts into with another host (0.0.0.0 or an address of their choice).
"""

from pathlib import Path

from tensorboard import default, program

from convbench.errors import ConvbenchError


def check_logdir(logdir: Path) -> None:
    if not logdir.is_dir():
        raise ConvbenchError(
            f"{logdir} is not a folder, so there are no runs to show. Runs are written to "
            "outputs/ in the folder where `convbench train` was started: run `convbench tb` from "
            "there, or pass the folder (`convbench tb path/to/outputs`)."
        )


def launch(logdir: Path, host: str, port: int | None = None) -> str:
    """Start TensorBoard on `logdir` in a background (daemon) thread; returns its URL.

    `port=None` takes TensorBoard's default, 6006, or the next free port after it; `port=0` lets
    the operating system pick any free port. An explicit port that is taken is an error.
    """

    check_logdir(logdir)
    board = program.TensorBoard(plugins=default.get_plugins())
    # TensorBoard's flag parser wants strings; its keyword arguments take Python values.
    board.configure(logdir=str(logdir), host=host, port=port)
    try:
        return board.launch()
    except program.TensorBoardServerException as exc:
        raise ConvbenchError(
            f"{exc.msg.rstrip('.')} (host {host}). Pick another port with --port N, or --port 0 "
            "for any free one."
        ) from None


def logged_runs(logdir: Path) -> int:
    """How many folders under `logdir` hold TensorBoard event files."""
    return len({event_file.parent for event_file in logdir.rglob("events.out.tfevents.*")})
