"""Running the `convbench` command in this process, with its error policy (convbench.cli.main):
the exit code and what it printed, at a fraction of a subprocess's cost. For what needs a real
process (signals, torchrun, a terminal), use helpers.cli."""

import contextlib
import io
import logging
import sys
from dataclasses import dataclass

from convbench.cli import main
from convbench.data import folder


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def convbench(*args: str) -> Result:
    """`convbench ARGS` through the console script's entry point; never raises SystemExit. As
    in a new process, nothing read by an earlier call is remembered (the image folders' index,
    which a process reads once)."""
    folder.index_cache_clear()
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, level = sys.argv, logging.getLogger().level
    sys.argv = ["convbench", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    finally:
        sys.argv = argv
        logging.getLogger().setLevel(level)
    return Result(code, stdout.getvalue(), stderr.getvalue())
