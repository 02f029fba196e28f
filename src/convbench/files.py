"""Atomic file writes: a reader (or a resume after a crash) sees the old file or the new one,
never half of one.

Every write goes to a temporary sibling (`.NAME.tmp-<pid>`, in the same folder so the rename
cannot cross file systems), is flushed and fsync'ed, then renamed over the target. When the write
fails, the temporary file is removed and the target is untouched. A process killed mid-write can
leave a temporary file behind; `remove_leftovers` clears them before a run continues.
"""

import errno
import json
import math
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from convbench.errors import WriteFailed

TMP_MARK = ".tmp-"  # `.last.pt.tmp-1234`: the leftovers of an interrupted write


def temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


class _RecordingWriter:
    """A file handle that remembers the OS's write error: torch's zip writer answers a failed
    write with its own RuntimeError ("unexpected pos ..."), and the OSError is what tells why."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(handle)` on a temporary sibling of `path`, then rename it over `path`.

    When the OS refuses a write (a full disk, a file-size limit, a read-only folder, an I/O
    error), the OSError propagates, even from inside torch.save, and the temporary file is gone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    recorder = None
    try:
        with open(tmp, "wb") as handle:
            recorder = _RecordingWriter(handle)
            write(recorder)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if recorder is not None and recorder.error is not None and exc is not recorder.error:
            raise recorder.error from None
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON, written atomically. A NaN or infinite number, which JSON has no
    spelling for, is written as null, so the file stays valid JSON for every reader."""
    text = json.dumps(finite(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def finite(value):
    """`value` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


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


def free_space(path: Path) -> str:
    """The free space of the file system holding `path` ("?" when it cannot be read)."""
    folder = Path(path)
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    except OSError:  # a name too long, a folder we may not read
        return "?"
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if free >= scale:
            return f"{free / scale:.1f} {unit}"
    return f"{free} bytes"


RESUME_ADVICE = (
    "Free some space, or fix the folder, then continue with `convbench resume` on the run folder."
)


def write_failed(
    what: str, path: Path, exc: OSError, *, kept: str, advice: str = RESUME_ADVICE
) -> WriteFailed:
    """One paragraph for an OS write failure: what could not be written, where, why, the free
    space there, what was kept, and what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0, "")
    limit = ""
    if exc.errno == errno.EFBIG:
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            limit = f"; this process may write files of at most {soft:,} bytes (ulimit -f)"
    return WriteFailed(
        f"could not write {what} {path}: {reason}{f' ({code})' if code else ''}{limit}; "
        f"{free_space(path)} free there. {kept} {advice}"
    )
