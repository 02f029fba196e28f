"""Stop requests from the outside world: Ctrl-C, `kill`, and what SLURM/submitit send before
preemption (SIGTERM, SIGUSR1). The engine finishes the current step, writes last.pt, and exits
with EXIT_INTERRUPTED; `convbench resume RUN_DIR` continues the same run. A second signal stops
at once, mid-step: the run then resumes from its last save, if it made one."""

import logging
import signal
import threading

from convbench.errors import RunInterrupted

log = logging.getLogger("convbench")

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class StopRequest:
    """While entered, turns the stop signals into `requested` (the signal's name). With
    `at_once` (while a run is built: its data decoded, its model made, nothing yet to save) a
    stop signal ends the run there, as RunInterrupted with nothing saved."""

    def __init__(self, at_once: bool = False):
        self.requested: str | None = None
        self.at_once = at_once
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        name = signal.Signals(number).name
        if self.at_once:
            raise RunInterrupted(name, saved=False)
        if self.requested:  # asked twice: stop now, in the middle of the step, saving nothing
            raise RunInterrupted(f"a second {name}", saved=False)
        self.requested = name
        log.warning("%s received: finishing the current step, then saving last.pt", name)

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
