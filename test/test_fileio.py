"""The shared file helpers: atomic folder writes (all or nothing, modes like mkdir) and the
natural sort key."""

import os
import stat
from pathlib import Path

import pytest

from pgov3d_core.fileio import atomic_write_bytes, atomic_write_dir, natural_sort_key


def _write_two(tmp: Path) -> None:
    (tmp / "a.txt").write_text("a")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "b.txt").write_text("b")


def test_folder_appears_complete_or_not_at_all(tmp_path):
    dest = tmp_path / "scene"
    assert atomic_write_dir(dest, _write_two) == dest
    assert (dest / "sub" / "b.txt").read_text() == "b"

    def fails(tmp: Path) -> None:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("disk full")

    other = tmp_path / "other"
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_dir(other, fails)
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # no .partial leftovers
    # A non-empty folder is not replaced unless asked; with replace the new content wins.
    with pytest.raises(OSError):
        atomic_write_dir(dest, lambda tmp: (tmp / "new.txt").write_text("n"))
    assert (dest / "a.txt").exists() and not (dest / "new.txt").exists()
    atomic_write_dir(dest, lambda tmp: (tmp / "new.txt").write_text("n"), replace=True)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]  # the old copy is gone
    # An empty folder (e.g. made by a user beforehand) is taken over.
    (tmp_path / "empty").mkdir()
    atomic_write_dir(tmp_path / "empty", _write_two)
    assert (tmp_path / "empty" / "a.txt").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_folder_and_file_modes_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = atomic_write_dir(tmp_path / "d", _write_two)
        file = atomic_write_bytes(tmp_path / "f.bin", b"123")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # mkdtemp alone gives 0700
    assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask


def test_natural_sort_key_orders_numbers_by_value():
    names = ["frame10.png", "frame2.png", "frame1.png", "Area_10", "Area_9", "a", "a0"]
    assert sorted(names, key=natural_sort_key) == ["Area_9", "Area_10", "a", "a0", "frame1.png", "frame2.png",
                                                   "frame10.png"]
    paths = [Path("/x/y10/img2.txt"), Path("/a/img10.txt"), Path("/b/img1.txt")]
    assert [p.name for p in sorted(paths, key=natural_sort_key)] == ["img1.txt", "img2.txt", "img10.txt"]
