"""Helpers shared by the dataset readers: checked file reads and all-or-nothing scene writing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pgov3d_core.data.scene import SceneError, read_image, read_matrix
from pgov3d_core.fileio import atomic_write_dir
from pgov3d_core.geometry import GeometryError, check_intrinsics, check_rigid

log = logging.getLogger("pgov3d_core.data.readers")


def require_file(path: Path, what: str = "file") -> Path:
    """`path` if it is an existing file, else SceneError naming it."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: {what} not found")
    return path


def require_dir(path: Path, what: str = "folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise SceneError(f"{path}: {what} not found")
    return path


def read_pose_file(path: Path) -> np.ndarray:
    """A 4x4 camera-to-world text matrix, checked finite and rigid (SceneError naming the file)."""
    m = read_matrix(require_file(path, "pose file"), (4, 4))
    try:
        return check_rigid(m, name=str(path))
    except GeometryError as exc:
        raise SceneError(str(exc)) from None


def checked_pose(m: np.ndarray, name: str) -> np.ndarray:
    """A 4x4 pose checked finite and rigid; SceneError with `name` (file and entry) otherwise."""
    try:
        return check_rigid(m, name=name)
    except GeometryError as exc:
        raise SceneError(str(exc)) from None


def checked_intrinsics(K, name: str) -> np.ndarray:
    """3x3 (or 4x4) pinhole K → 3x3 float64; SceneError with `name` otherwise."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise SceneError(f"{name}: not a numeric matrix ({exc})") from None
    try:
        return check_intrinsics(K, name=name)
    except GeometryError as exc:
        raise SceneError(str(exc)) from None


def read_depth_png(path: Path, depth_scale: float, invalid_values: tuple[int, ...] = ()) -> np.ndarray:
    """A single-channel 16-bit depth PNG → float32 metres (value / depth_scale); 0 = invalid.

    `invalid_values` are raw values that also mean "no measurement" (7-Scenes writes 65535)."""
    raw = read_image(path)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32):
        raise SceneError(f"{path}: depth must be a single-channel 16-bit PNG, got {raw.dtype} {raw.shape}")
    raw = raw.astype(np.int64)
    for v in invalid_values:
        raw[raw == v] = 0
    return (raw / float(depth_scale)).astype(np.float32)


def read_rgb(path: Path) -> np.ndarray:
    """Colour image → (H, W, 3) uint8 RGB (grey is replicated)."""
    rgb = read_image(path)
    if rgb.ndim == 2:
        if rgb.dtype != np.uint8:
            raise SceneError(f"{path}: colour image must be 8-bit, got {rgb.dtype}")
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return rgb


def check_same_size(color: np.ndarray, depth: np.ndarray, color_path: Path, depth_path: Path) -> None:
    """Datasets whose colour and depth share one K must have equal image sizes."""
    if color.shape[:2] != depth.shape:
        raise SceneError(
            f"{depth_path}: depth size {depth.shape[1]}x{depth.shape[0]} does not match colour "
            f"{color_path} size {color.shape[1]}x{color.shape[0]}"
        )


def read_rgbd(
    color_path: Path, depth_path: Path, depth_scale: float, invalid_values: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """A registered colour/depth image pair → (colour (H, W, 3) uint8, depth (H, W) float32 metres).

    For datasets whose colour and depth share one K: SceneError when the two sizes differ.
    `depth_scale` and `invalid_values` as in `read_depth_png`."""
    color = read_rgb(color_path)
    depth = read_depth_png(depth_path, depth_scale, invalid_values)
    check_same_size(color, depth, color_path, depth_path)
    return color, depth


def write_scene_atomically(out_dir: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp_dir)` into a temporary sibling folder, then rename it to `out_dir`.

    A converter that fails half-way (a corrupt frame in the middle of a sequence) leaves no
    half-written scene behind. `out_dir` must not exist or be empty: converters never overwrite."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SceneError(f"{out_dir}: output exists and is not an empty folder (refusing to overwrite)")
    return atomic_write_dir(out_dir, write)
