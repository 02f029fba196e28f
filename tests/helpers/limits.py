"""Real write failures from the operating system, for a convbench process of a test's own."""

import contextlib
import resource
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest


def ignore_sigxfsz() -> None:
    """preexec_fn: past RLIMIT_FSIZE a write then fails with EFBIG instead of killing the
    process with SIGXFSZ (an ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def limit_file_size(pid: int, size: int) -> None:
    """From now on, process `pid` may write files of at most `size` bytes (what `ulimit -f`
    sets, applied to a running process)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))


@contextlib.contextmanager
def small_tmpfs(megabytes: int):
    """A real, small file system (tmpfs) mounted for the test, unmounted afterwards. Fails the
    test where mounting is not permitted: it needs root or CAP_SYS_ADMIN, as CI has."""
    folder = Path(tempfile.mkdtemp(prefix="cb-tmpfs-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.fail(
            f"mounting a {megabytes} MB tmpfs is not permitted here "
            f"({mounted.stderr.strip() or mounted.returncode}): run the tests as root, as CI "
            "does, or with CAP_SYS_ADMIN"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()
