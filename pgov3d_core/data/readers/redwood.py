"""Redwood / Open3D RGB-D sequences with a ``.log`` trajectory.

The ``.log`` format (redwood-data.org, also read/written by Open3D) has, per pose, a metadata
line of three integers ``i j n`` and four lines of a 4x4 **camera-to-world** matrix. For a camera
trajectory the third number is the 1-based number of the frame the pose belongs to, so pose k
is paired with frame ``n - 1`` of the colour/depth files, which are paired with each other by
sorted (natural) file order. Depth PNGs are uint16 millimetres by default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.readers._common import (
    checked_intrinsics,
    checked_pose,
    log,
    read_rgbd,
    require_dir,
    require_file,
    write_scene_atomically,
)
from pgov3d_core.data.scene import COLOR_EXTS, SceneError, read_matrix, write_scene
from pgov3d_core.fileio import natural_sort_key


@dataclass
class LogEntry:
    """One ``.log`` block: the metadata integers and the 4x4 camera-to-world pose."""

    meta: tuple[int, int, int]
    pose: np.ndarray


def read_log_trajectory(path: str | os.PathLike) -> list[LogEntry]:
    """Parse a ``.log`` file; each pose checked finite and rigid. Malformed blocks raise SceneError
    naming file and line."""
    path = require_file(Path(path), "trajectory .log")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneError(f"{path}: unreadable ({exc})") from None
    lines = [(n, ln.split()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if len(lines) % 5:
        raise SceneError(f"{path}: {len(lines)} non-empty lines, not a multiple of 5 (metadata + 4 matrix rows)")
    entries = []
    for b in range(0, len(lines), 5):
        n0, head = lines[b]
        try:
            if len(head) != 3:
                raise ValueError(f"expected 3 integers 'i j n', got {len(head)} fields")
            meta = tuple(int(v) for v in head)
        except ValueError as exc:
            raise SceneError(f"{path}:{n0}: bad metadata line ({exc})") from None
        rows = []
        for n, tok in lines[b + 1 : b + 5]:
            try:
                row = [float(v) for v in tok]
                if len(row) != 4:
                    raise ValueError(f"expected 4 numbers, got {len(row)}")
            except ValueError as exc:
                raise SceneError(f"{path}:{n}: bad matrix row ({exc})") from None
            rows.append(row)
        entries.append(LogEntry(meta, checked_pose(np.array(rows), f"{path}:{n0} pose {len(entries)}")))
    if not entries:
        raise SceneError(f"{path}: no poses")
    return entries


def write_log_trajectory(path: str | os.PathLike, poses) -> None:
    """Write camera-to-world poses as a ``.log`` (metadata ``k k k+1``, as Open3D does)."""
    lines = []
    for k, pose in enumerate(poses):
        lines.append(f"{k} {k} {k + 1}")
        lines += [" ".join(f"{v:.10g}" for v in row) for row in np.asarray(pose, dtype=np.float64)]
    Path(path).write_text("\n".join(lines) + "\n")


def read_open3d_intrinsics(path: str | os.PathLike) -> np.ndarray:
    """An Open3D ``PinholeCameraIntrinsic`` JSON (``intrinsic_matrix``: 9 numbers, column-major)
    → 3x3 K."""
    path = require_file(Path(path), "intrinsics JSON")
    try:
        data = json.loads(path.read_text())
        K = np.asarray(data["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SceneError(f"{path}: not an Open3D intrinsics JSON ({exc})") from None
    return checked_intrinsics(K, str(path))


def _load_K(K) -> np.ndarray:
    if isinstance(K, str | os.PathLike):
        p = Path(K)
        if p.suffix.lower() == ".json":
            return read_open3d_intrinsics(p)
        return checked_intrinsics(read_matrix(require_file(p, "intrinsics file")), str(p))
    return checked_intrinsics(K, "K")




def list_redwood_frames(
    color_dir: str | os.PathLike, depth_dir: str | os.PathLike, log_path: str | os.PathLike
) -> list[tuple[str, Path, Path, np.ndarray]]:
    """[(frame_id, color_path, depth_path, pose)] for the frames that have a pose, in file order.

    frame_id = the depth file's stem. Colour and depth are paired by sorted order (equal counts
    required); frames without a pose are skipped and logged; a pose naming a frame that does
    not exist, or two poses for one frame, raise SceneError."""
    color_dir = require_dir(Path(color_dir), "colour folder")
    depth_dir = require_dir(Path(depth_dir), "depth folder")
    colors = sorted((p for p in color_dir.iterdir() if p.suffix.lower() in COLOR_EXTS), key=natural_sort_key)
    depths = sorted(depth_dir.glob("*.png"), key=natural_sort_key)
    if not depths:
        raise SceneError(f"{depth_dir}: no depth .png files")
    if len(colors) != len(depths):
        raise SceneError(f"{color_dir}: {len(colors)} colour images but {depth_dir} has {len(depths)} depth images")
    entries = read_log_trajectory(log_path)
    pose_of: dict[int, np.ndarray] = {}
    for k, e in enumerate(entries):
        idx = e.meta[2] - 1
        if not 0 <= idx < len(depths):
            raise SceneError(
                f"{log_path}: pose {k} is for frame number {e.meta[2]} but there are {len(depths)} frames (1-based)"
            )
        if idx in pose_of:
            raise SceneError(f"{log_path}: two poses for frame number {e.meta[2]}")
        pose_of[idx] = e.pose
    missing = [depths[i].stem for i in range(len(depths)) if i not in pose_of]
    if missing:
        log.warning("%s: %d frames have no pose in %s and are skipped, e.g. %s", depth_dir, len(missing), log_path,
                    missing[:10])
    return [(depths[i].stem, colors[i], depths[i], pose_of[i]) for i in range(len(depths)) if i in pose_of]


def read_redwood_frame(color_path: Path, depth_path: Path, pose: np.ndarray, K: np.ndarray, frame_id: str,
                       depth_scale: float = 1000.0) -> Frame:
    color, depth = read_rgbd(color_path, depth_path, depth_scale)
    return Frame(color=color, depth=depth, K=K, pose=pose, frame_id=frame_id)


def convert_redwood(
    color_dir: str | os.PathLike,
    depth_dir: str | os.PathLike,
    log_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    K,
    depth_scale: float = 1000.0,
    color_format: str = "png",
) -> Path:
    """Convert colour/depth folders + a ``.log`` trajectory into a canonical scene folder.

    `K`: the depth/colour camera's 3x3 (or 4x4) matrix, or a path to an Open3D intrinsics JSON
    or a text matrix. `depth_scale`: the input PNG's units per metre (1000 = millimetres); it is
    kept in meta.yaml so values are copied exactly. All-or-nothing."""
    if not np.isfinite(depth_scale) or depth_scale <= 0:
        raise ValueError(f"depth_scale must be positive, got {depth_scale}")
    K = _load_K(K)
    entries = list_redwood_frames(color_dir, depth_dir, log_path)
    extra = {"dataset": "redwood", "trajectory": Path(log_path).name}

    def write(tmp: Path) -> None:
        frames = (read_redwood_frame(c, d, pose, K, fid, depth_scale) for fid, c, d, pose in entries)
        write_scene(tmp, frames, depth_scale=depth_scale, color_format=color_format, source="redwood",
                    extra_meta=extra)

    return write_scene_atomically(out_dir, write)
