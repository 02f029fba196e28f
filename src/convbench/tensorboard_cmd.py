"""`convbench tb [DIR]`: TensorBoard on the run folders, on this machine only unless asked.

TensorBoard runs in this process through its own program API (`tensorboard.program`), so the
port it really bound (with `--port 0`, any free one) is known and printed as a URL. It binds to
127.0.0.1 by default: TensorBoard has no authentication, so serving the runs to the network is
something the user opts into with `--host 0.0.0.0` (or an address of their choice).
"""

import threading
from pathlib import Path

from convbench.errors import ConvbenchError

LOOPBACK = "127.0.0.1"


def _check_logdir(logdir: Path) -> None:
    if not logdir.is_dir():
        raise ConvbenchError(
            f"{logdir} is not a folder, so there are no runs to show. Runs are written to "
            "outputs/ in the folder where `convbench train` was started: run `convbench tb` from "
            "there, or pass the folder (`convbench tb path/to/outputs`)."
        )


def launch(logdir: Path, host: str = LOOPBACK, port: int | None = None) -> str:
    """Start TensorBoard on `logdir` in a background thread; returns its URL.

    `port=None` takes TensorBoard's default, 6006, or the next free port after it; `port=0` lets
    the operating system pick any free port. An explicit port that is taken is an error.
    """
    from tensorboard import default, program

    _check_logdir(logdir)
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


def serve(logdir: Path, host: str = LOOPBACK, port: int | None = None) -> None:
    """Serve `logdir` until Ctrl-C (the server thread is a daemon and ends with the process)."""
    url = launch(logdir, host, port)
    runs = {event_file.parent for event_file in logdir.rglob("events.out.tfevents.*")}
    print(f"TensorBoard on {logdir} ({len(runs)} runs logged so far): {url}", flush=True)
    if host != LOOPBACK:
        print(f"Listening on {host}: anyone who can reach this address sees the runs.", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        threading.Event().wait()  # only a signal ends this wait
    except KeyboardInterrupt:
        print("TensorBoard stopped.", flush=True)
