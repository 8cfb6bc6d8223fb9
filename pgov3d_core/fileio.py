"""File helpers every writer and reader of the project shares.

* `atomic_write` / `atomic_write_bytes`: the one atomic file write. Write to a temporary file
  beside the target, then rename it into place (os.replace), so a crash or a full disk never
  leaves a half-written map, checkpoint, scene file, cache or log, and readers see either the old
  file or the new one.
* `atomic_write_dir`: the same for a whole folder (a converted or generated scene, an extracted
  model): written into a hidden sibling folder, renamed into place when complete.
* `natural_sort_key`: file names in the order a person numbers them (frame2 before frame10).

`tempfile.mkstemp` / `mkdtemp` create with mode 0600 / 0700; maps, checkpoints and scenes are
shared between users and tools, so the final file or folder gets the mode an ordinary
`open(path, "w")` / `mkdir` would give it (0666 / 0777 masked by the process umask).
"""

from __future__ import annotations

import os
import re
import shutil
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


def atomic_write_dir(path: str | os.PathLike, write: Callable[[Path], object], replace: bool = False) -> Path:
    """Atomically create the folder `path` with what `write(tmp)` puts into `tmp`, a hidden sibling
    folder (`.<name>.<random>.partial`) renamed to `path` when `write` returns. On any error the
    temporary folder is removed and `path` is untouched.

    An existing `path` must be an empty folder (it is replaced), unless `replace` is set: then the
    old folder is moved aside and deleted after the rename. Without `replace`, a non-empty `path`
    that appears while `write` runs (another writer finished first) makes the rename fail with
    OSError, and the caller decides whether that copy will do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    stale = None
    try:
        os.chmod(tmp, 0o777 & ~process_umask())
        write(tmp)
        if replace and path.exists():
            stale = path.with_name(f".{path.name}.stale-{os.getpid()}")
            os.replace(path, stale)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if stale is not None and not path.exists():
            os.replace(stale, path)  # the rename failed: the old folder goes back
            stale = None
        raise
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    return path


def natural_sort_key(name: str | os.PathLike) -> list:
    """Sort key ordering digit runs by value: frame2 < frame10 (a path sorts by its file name)."""
    text = name.name if isinstance(name, Path) else str(name)
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
