"""3DMatch RGB-D scenes (SUN3D, 7-Scenes, Analysis-by-Synthesis, … as re-released by 3DMatch).

    <root>/camera-intrinsics.txt                 3x3 K, shared by colour and depth
    <root>/seq-XX/frame-XXXXXX.color.png|.jpg    8-bit RGB
    <root>/seq-XX/frame-XXXXXX.depth.png         uint16 millimetres (depth_scale 1000), 0 = invalid
                                                 (7-Scenes also writes 65535 for "no measurement")
    <root>/seq-XX/frame-XXXXXX.pose.txt          4x4 camera-to-world (3DMatch convention)

Colour and depth are registered and share the one K, so their sizes must be equal. Sequences of
one scene are taken to share the world frame (as in 7-Scenes); convert one with ``seq=`` otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.readers._common import (
    checked_intrinsics,
    read_pose_file,
    read_rgbd,
    require_dir,
    require_file,
    write_scene_atomically,
)
from pgov3d_core.data.scene import SceneError, read_matrix, write_scene

THREEDMATCH_DEPTH_SCALE = 1000.0
INVALID_DEPTH = (65535,)
_FRAME = re.compile(r"^frame-(\d+)\.depth\.png$")


def read_threedmatch_intrinsics(root: str | os.PathLike) -> np.ndarray:
    """``camera-intrinsics.txt`` → 3x3 K (SceneError naming the file when missing or invalid)."""
    path = require_file(Path(root) / "camera-intrinsics.txt", "3DMatch intrinsics file")
    return checked_intrinsics(read_matrix(path), str(path))


def _sequences(root: Path, seq: str | int | None) -> list[Path]:
    if seq is None:
        seqs = sorted((p for p in root.glob("seq-*") if p.is_dir()), key=lambda p: p.name)
        if not seqs:
            raise SceneError(f"{root}: no seq-* folders")
        return seqs
    name = f"seq-{seq:02d}" if isinstance(seq, int) else str(seq)
    return [require_dir(root / name, "3DMatch sequence folder")]


def list_threedmatch_frames(
    root: str | os.PathLike, seq: str | int | None = None
) -> list[tuple[str, Path, Path, Path]]:
    """[(frame_id, color_path, depth_path, pose_path)] in sequence then frame order.

    Frames are indexed by their depth images; each needs a ``.color.png`` (or ``.jpg``) and a
    ``.pose.txt`` (SceneError naming the missing file). frame_id = ``<seq>_<number>``, e.g.
    ``seq-01_000000``. `seq`: a folder name or number; None = every ``seq-*`` folder."""
    root = require_dir(Path(root), "3DMatch scene folder")
    out = []
    for sdir in _sequences(root, seq):
        found = sorted((int(m.group(1)), m.group(1), p) for p in sdir.iterdir() if (m := _FRAME.match(p.name)))
        if not found:
            raise SceneError(f"{sdir}: no frame-XXXXXX.depth.png files")
        for _, num, depth_path in found:
            stem = sdir / f"frame-{num}"
            color = next((c for ext in (".png", ".jpg") if (c := Path(f"{stem}.color{ext}")).is_file()), None)
            if color is None:
                raise SceneError(f"{stem}.color.png: file not found (nor .color.jpg)")
            out.append((f"{sdir.name}_{num}", color, depth_path, require_file(Path(f"{stem}.pose.txt"), "pose file")))
    return out


def read_threedmatch_frame(color_path: Path, depth_path: Path, pose_path: Path, K: np.ndarray, frame_id: str) -> Frame:
    color, depth = read_rgbd(color_path, depth_path, THREEDMATCH_DEPTH_SCALE, INVALID_DEPTH)
    return Frame(color=color, depth=depth, K=K, pose=read_pose_file(pose_path), frame_id=frame_id)


def iter_threedmatch_frames(root: str | os.PathLike, seq: str | int | None = None, stride: int = 1) -> Iterator[Frame]:
    """Frames read in place: depth metres (mm / 1000; 0 and 65535 invalid), pose camera-to-world."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    K = read_threedmatch_intrinsics(root)
    for fid, c, d, p in list_threedmatch_frames(root, seq)[::stride]:
        yield read_threedmatch_frame(c, d, p, K, fid)


def convert_threedmatch(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    seq: str | int | None = None,
    stride: int = 1,
    color_format: str = "png",
) -> Path:
    """Convert a 3DMatch scene (one sequence, or all) into a canonical scene folder, every
    `stride`-th frame; depth_scale 1000 (millimetres, values copied; 65535 → 0). All-or-nothing."""
    root = Path(root)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    K = read_threedmatch_intrinsics(root)
    entries = list_threedmatch_frames(root, seq)[::stride]
    extra = {
        "dataset": "3dmatch",
        "scene": root.resolve().name,
        "sequences": sorted({fid.rsplit("_", 1)[0] for fid, *_ in entries}),
    }

    def write(tmp: Path) -> None:
        frames = (read_threedmatch_frame(c, d, p, K, fid) for fid, c, d, p in entries)
        write_scene(tmp, frames, depth_scale=THREEDMATCH_DEPTH_SCALE, color_format=color_format, source="3dmatch",
                    extra_meta=extra)

    return write_scene_atomically(out_dir, write)
