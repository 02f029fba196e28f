"""Atomic file writes: a reader (or a resume after a crash) sees the old file or the new one,
never half of one.

Every write goes to a temporary sibling (`.NAME.tmp-<pid>`, in the same folder so the rename
cannot cross file systems), is flushed and fsync'ed, then renamed over the target. When the write
fails, the temporary file is removed and the target is untouched. A process killed mid-write can
leave a temporary file behind; `remove_leftovers` clears them before a run continues.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_MARK = ".tmp-"  # `.last.pt.tmp-1234`: the leftovers of an interrupted write


def temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(handle)` on a temporary sibling of `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, written atomically."""
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of writes that were killed before their rename."""
    for leftover in folder.glob(f".*{TMP_MARK}*"):
        leftover.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable (POSIX); harmless where folders cannot be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
