"""Running the `convbench` command in this process, with its error policy (convbench.cli.main):
the exit code and what it printed, at a fraction of a subprocess's cost. For what needs a real
process (signals from outside, kills, torchrun, a terminal), use helpers.cli."""

import contextlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from convbench.cli import main
from convbench.data import folder


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def convbench(*args: str, cwd: Path | None = None) -> Result:
    """`convbench ARGS` through the console script's entry point, in the folder `cwd` (this
    process's current one if None); never raises SystemExit. As in a new process, nothing read
    by an earlier call is remembered (the image folders' index, which a process reads once), and
    as at a process's end, the logging a run set up is taken down: its train.log is closed, and
    what this process logs afterwards does not land in it."""
    folder.index_cache_clear()
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    argv, level, handlers = sys.argv, root.level, root.handlers[:]
    sys.argv = ["convbench", *map(str, args)]
    code = 0
    try:
        with (
            contextlib.chdir(cwd or Path.cwd()),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            main()
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    finally:
        sys.argv = argv
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    return Result(code, stdout.getvalue(), stderr.getvalue())
