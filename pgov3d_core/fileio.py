"""The one atomic file write: write to a temporary file beside the target, then rename it into
place (os.replace), so a crash or a full disk never leaves a half-written map, checkpoint or
scene file, and readers see either the old file or the new one.

`tempfile.mkstemp` creates its file with mode 0600; maps, checkpoints and scenes are shared
between users and tools, so the final file gets the mode an ordinary `open(path, "w")` would
give it (0666 masked by the process umask).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def process_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it,
    which races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the read-by-setting fallback
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], durable: bool = False) -> Path:
    """Atomically create or replace `path` with what `write(f)` writes to the binary file `f`.
    `durable` fsyncs before the rename (checkpoints: survive a power cut, not only a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~process_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))
