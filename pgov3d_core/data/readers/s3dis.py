"""S3DIS (Stanford Large-Scale 3D Indoor Spaces), the ``Stanford3dDataset_v1.2`` room layout.

    Area_N/<room>/Annotations/<class>_<k>.txt     one object per file, lines ``x y z r g b``
                                                 (metres in the area's frame, colour 0..255)

A room becomes a `PointCloud` whose labels are the 13 S3DIS benchmark class indices
(`label_sets.S3DIS_CLASSES`; the Area 2 ``stairs`` objects count as clutter, as is customary).
This layout has no posed RGB-D frames, so a converted room folder holds only ``scene.ply`` +
``meta.yaml`` and `Scene` (which needs frames) cannot open it: use `read_s3dis_room`, or
`pgov3d_core.data.scene.read_ply_cloud` on the converted ``scene.ply``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from pgov3d_core.data.label_sets import S3DIS, S3DIS_ALIASES
from pgov3d_core.data.readers._common import log, require_dir, write_scene_atomically
from pgov3d_core.data.scene import META_FILE, PointCloud, SceneError, SceneMeta, write_ply_cloud
from pgov3d_core.fileio import natural_sort_key

_OBJECT_FILE = re.compile(r"^(?P<cls>[A-Za-z]+)_(?P<k>\d+)$")




def s3dis_class_index(file_stem: str, path: Path | None = None) -> int:
    """Class index of an annotation file stem such as ``chair_3`` (``stairs_1`` → clutter)."""
    m = _OBJECT_FILE.match(file_stem)
    where = path if path is not None else file_stem
    if m is None:
        raise SceneError(f"{where}: annotation file name is not <class>_<k>.txt")
    cls = m["cls"].lower()
    cls = S3DIS_ALIASES.get(cls, cls)
    if cls not in S3DIS.class_names:
        raise SceneError(f"{where}: unknown S3DIS class {m['cls']!r} (known: {', '.join(S3DIS.class_names)})")
    return S3DIS.class_names.index(cls)


def _parse_lines(path: Path, on_bad_line: str) -> np.ndarray:
    """Slow path: parse line by line to name (or skip) the malformed ones."""
    rows = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            tok = line.split()
            if not tok:
                continue
            try:
                row = [float(t) for t in tok]
                if len(row) != 6:
                    raise ValueError(f"expected 6 values, got {len(row)}")
            except ValueError as exc:
                msg = f"{path}:{lineno}: malformed line {line[:80]!r} ({exc})"
                if on_bad_line == "skip":
                    log.warning("skipping %s", msg)
                    continue
                raise SceneError(msg) from None
            rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def read_s3dis_object(path: Path, on_bad_line: str = "raise") -> np.ndarray:
    """One annotation file → (N, 6) float64 ``x y z r g b``.

    Malformed lines raise SceneError naming file and line (``on_bad_line="skip"`` logs and drops
    them instead: the released Area_5/hallway_6 ceiling file has one corrupt character)."""
    if on_bad_line not in ("raise", "skip"):
        raise ValueError(f"on_bad_line must be 'raise' or 'skip', got {on_bad_line!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
            data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except OSError as exc:
        raise SceneError(f"{path}: unreadable ({exc})") from None
    except ValueError:
        data = _parse_lines(path, on_bad_line)
    if data.size and data.shape[1] != 6:
        data = _parse_lines(path, on_bad_line)
    data = data.reshape(-1, 6)
    if not np.isfinite(data).all():
        raise SceneError(f"{path}: contains NaN or inf")
    rgb = data[:, 3:]
    if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
        raise SceneError(f"{path}: colours must be 0..255, got range {rgb.min()}..{rgb.max()}")
    return data


def _read_room(room_dir: Path, on_bad_line: str) -> tuple[PointCloud, np.ndarray]:
    ann = require_dir(Path(room_dir) / "Annotations", "S3DIS Annotations folder")
    files = sorted(ann.glob("*.txt"), key=natural_sort_key)
    if not files:
        raise SceneError(f"{ann}: no <class>_<k>.txt annotation files")
    parts, labels, instances = [], [], []
    for k, path in enumerate(files):
        cls = s3dis_class_index(path.stem, path)
        data = read_s3dis_object(path, on_bad_line)
        if len(data) == 0:
            log.warning("%s: empty annotation file, skipped", path)
            continue
        parts.append(data)
        labels.append(np.full(len(data), cls, np.int32))
        instances.append(np.full(len(data), k, np.int32))
    if not parts:
        raise SceneError(f"{ann}: every annotation file is empty")
    data = np.concatenate(parts)
    cloud = PointCloud(
        xyz=data[:, :3].astype(np.float32),
        rgb=np.round(data[:, 3:]).astype(np.uint8),
        labels=np.concatenate(labels),
    )
    return cloud, np.concatenate(instances)


def read_s3dis_room(room_dir: str | os.PathLike, on_bad_line: str = "raise") -> PointCloud:
    """A room's annotated objects as one PointCloud: xyz metres (float32), rgb uint8, labels =
    S3DIS 13-class indices (``ceiling`` = 0 … ``clutter`` = 12). Files are read in natural order."""
    return _read_room(Path(room_dir), on_bad_line)[0]


def convert_s3dis_room(room_dir: str | os.PathLike, out_dir: str | os.PathLike, on_bad_line: str = "raise") -> Path:
    """Write a room as a frame-less scene folder: ``scene.ply`` (x y z, red green blue, label =
    S3DIS class index, plus ``instance`` = object-file number) and ``meta.yaml`` (class_names =
    the 13 S3DIS classes, source "s3dis", area/room names). Nothing is written if reading fails."""
    room_dir = Path(room_dir)
    cloud, instances = _read_room(room_dir, on_bad_line)
    meta = SceneMeta(
        depth_scale=1000.0,
        class_names=list(S3DIS.class_names),
        source="s3dis",
        extra={"label_set": "s3dis", "area": room_dir.parent.name, "room": room_dir.name, "has_frames": False},
    )

    def write(tmp: Path) -> None:
        write_ply_cloud(tmp / "scene.ply", cloud, extra={"instance": instances})
        meta.write(tmp / META_FILE)

    return write_scene_atomically(out_dir, write)
