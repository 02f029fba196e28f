"""convbench in a pseudo-terminal, read back as a person sees it: the bytes it writes are fed to
pyte, a VT100 terminal emulator, and the screen's lines are returned (cursor moves, erased
progress bars and overwritten lines resolved as a terminal resolves them)."""

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte

from helpers.cli import cli_env

ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78])")


class Terminal:
    """A `cols` x `rows` terminal running `convbench ARGS` (stdin, stdout and stderr on it)."""

    def __init__(self, *args: str, cwd: Path, cols: int = 120, rows: int = 80):
        self.output = b""
        self._master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = cli_env({"TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)})
        for variable in ("CI", "NO_COLOR", "TERM_PROGRAM"):  # rich would not draw a live bar
            env.pop(variable, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convbench", *args],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.cols, self.rows = cols, rows

    def read(self, timeout: float = 0.1) -> None:
        """Take what the program wrote within `timeout` seconds."""
        ready, _, _ = select.select([self._master], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # OSError: the program closed the terminal
                self.output += os.read(self._master, 1 << 16)

    def wait(self, deadline_s: float = 300) -> int:
        """Read until the program exits; returns its exit code."""
        deadline = time.monotonic() + deadline_s
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "the program did not finish in time"
            self.read()
        self.read(0.2)
        os.close(self._master)
        return self.process.returncode

    def logical_lines(self) -> list[str]:
        """Every line the program wrote as it wrote it, before the terminal wrapped it: the
        output without its escape sequences, cut at each newline and carriage return."""
        text = ESCAPE.sub("", self.output.decode(errors="replace"))
        return [part for line in text.split("\n") for part in line.split("\r")]

    def screen(self) -> list[str]:
        """The non-empty lines on the screen now, without trailing blanks."""
        screen = pyte.Screen(self.cols, self.rows)
        pyte.ByteStream(screen).feed(self.output)
        return [line.rstrip() for line in screen.display if line.strip()]
