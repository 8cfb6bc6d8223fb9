"""TUM RGB-D benchmark sequences (Sturm et al. 2012).

    <seq>/rgb.txt            ``timestamp filename`` per line (``#`` = comment), 640x480 8-bit PNG
    <seq>/depth.txt          same, 16-bit PNG, value / 5000 = metres (0 = invalid), registered to rgb
    <seq>/groundtruth.txt    ``timestamp tx ty tz qx qy qz qw`` (100-300 Hz motion capture)

Conventions, exactly as the dataset documents them:
* the ground-truth pose is the colour camera's optical centre and orientation in the world:
  camera-to-world, translation (tx, ty, tz) and unit quaternion in **x y z w** order (scalar last,
  which is also `scipy.spatial.transform.Rotation.from_quat`'s default);
* rgb, depth and poses are stamped by different clocks/rates, so frames are associated by
  nearest timestamp within `max_difference` seconds (0.02 s like TUM's ``associate.py``;
  rgb↔depth greedily one-to-one as there, the pose nearest to the rgb stamp);
* intrinsics are the dataset's calibrated colour intrinsics of the freiburg1/2/3 sensor (chosen
  from the folder name, e.g. ``rgbd_dataset_freiburg1_xyz``) unless given; lens distortion
  (non-zero for fr1/fr2) is not modelled.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

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
from pgov3d_core.data.scene import SceneError, write_scene
from pgov3d_core.fileio import atomic_write_bytes

TUM_DEPTH_SCALE = 5000.0
"""TUM depth PNG units per metre (value 5000 = 1 m)."""

TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
"""Calibrated (fx, fy, cx, cy) of the colour camera per sensor, from the TUM RGB-D dataset page."""

TIMESTAMPS_FILE = "timestamps.txt"


@dataclass
class TumFrameRef:
    """One associated frame: files and the three timestamps (seconds) that were matched."""

    rgb_path: Path
    depth_path: Path
    t_rgb: float
    t_depth: float
    t_pose: float
    pose: np.ndarray


def read_tum_list(path: str | os.PathLike) -> list[tuple[float, list[str]]]:
    """A TUM text list → [(timestamp, remaining fields)], skipping ``#`` comments and blank lines.
    Malformed lines (no numeric timestamp) raise SceneError naming file and line."""
    path = require_file(Path(path), "TUM list")
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneError(f"{path}: unreadable ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        tok = s.replace(",", " ").split()
        try:
            t = float(tok[0])
        except ValueError:
            raise SceneError(f"{path}:{lineno}: expected a timestamp first, got {line[:80]!r}") from None
        if not np.isfinite(t):
            raise SceneError(f"{path}:{lineno}: timestamp is not finite")
        out.append((t, tok[1:]))
    return out


def tum_pose(tx: float, ty: float, tz: float, qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """TUM pose fields → 4x4 camera-to-world. Quaternion order x y z w (scalar last); it is
    normalised (TUM's are unit up to print precision). ValueError for non-finite or zero quaternions."""
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    t = np.array([tx, ty, tz], dtype=np.float64)
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise ValueError("pose contains NaN or inf")
    if np.linalg.norm(q) < 1e-9:
        raise ValueError("quaternion has zero norm")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()  # scipy's default order is (x, y, z, w) = TUM's
    T[:3, 3] = t
    return T


def read_tum_trajectory(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``groundtruth.txt`` → (timestamps (N,) sorted ascending, poses (N, 4, 4) camera-to-world)."""
    path = Path(path)
    entries = read_tum_list(path)
    ts, poses = [], []
    for t, rest in entries:
        try:
            if len(rest) != 7:
                raise ValueError(f"expected 'timestamp tx ty tz qx qy qz qw', got {len(rest) + 1} fields")
            poses.append(tum_pose(*(float(v) for v in rest)))
        except ValueError as exc:
            raise SceneError(f"{path}: entry at t={t:.6f}: {exc}") from None
        ts.append(t)
    if not ts:
        raise SceneError(f"{path}: no poses")
    ts_arr = np.asarray(ts)
    order = np.argsort(ts_arr, kind="stable")
    return ts_arr[order], np.stack(poses)[order]


def associate(
    stamps_a: np.ndarray, stamps_b: np.ndarray, max_difference: float = 0.02, offset: float = 0.0
) -> list[tuple[int, int]]:
    """One-to-one association of two timestamp lists, as TUM's ``associate.py``: every pair with
    |a - (b + offset)| < max_difference is a candidate; candidates are accepted greedily in order
    of increasing difference, each a and b used at most once. Returns (index_a, index_b) sorted by a."""
    a = np.asarray(stamps_a, dtype=np.float64)
    b = np.asarray(stamps_b, dtype=np.float64) + offset
    if len(a) == 0 or len(b) == 0:
        return []
    order_b = np.argsort(b, kind="stable")
    bs = b[order_b]
    lo = np.searchsorted(bs, a - max_difference, side="left")
    hi = np.searchsorted(bs, a + max_difference, side="right")
    cand = []
    for i in range(len(a)):
        for k in range(lo[i], hi[i]):
            d = abs(a[i] - bs[k])
            if d < max_difference:
                cand.append((d, i, int(order_b[k])))
    cand.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cand:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def tum_intrinsics(seq_name: str | os.PathLike) -> np.ndarray:
    """Default 3x3 K for a sequence, from ``freiburg1/2/3`` (or ``fr1/2/3``) in its folder name."""
    name = Path(seq_name).resolve().name
    m = re.search(r"(?:freiburg|fr)([123])(?![0-9])", name.lower())
    if m is None:
        raise SceneError(
            f"{seq_name}: cannot tell the TUM sensor (freiburg1/2/3) from the folder name; pass K explicitly"
        )
    fx, fy, cx, cy = TUM_INTRINSICS[f"freiburg{m.group(1)}"]
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _as_K(K, name: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (4,):
        fx, fy, cx, cy = K
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return checked_intrinsics(K, name)


def read_tum_sequence(seq_dir: str | os.PathLike, max_difference: float = 0.02) -> list[TumFrameRef]:
    """Associate a sequence's rgb, depth and ground-truth poses (see the module docstring).

    Rgb images without a depth image within `max_difference`, and rgb/depth pairs without a pose
    within `max_difference` of the rgb stamp, are skipped and logged (a summary warning; each
    frame at DEBUG). SceneError if nothing is left."""
    seq_dir = require_dir(Path(seq_dir), "TUM sequence folder")
    rgb = read_tum_list(seq_dir / "rgb.txt")
    depth = read_tum_list(seq_dir / "depth.txt")
    gt_path = seq_dir / "groundtruth.txt"
    pose_ts, poses = read_tum_trajectory(gt_path)
    for name, entries in (("rgb.txt", rgb), ("depth.txt", depth)):
        for t, rest in entries:
            if len(rest) != 1:
                raise SceneError(f"{seq_dir / name}: entry at t={t:.6f}: expected 'timestamp filename'")
    t_rgb = np.array([t for t, _ in rgb])
    t_depth = np.array([t for t, _ in depth])
    pairs = associate(t_rgb, t_depth, max_difference)
    paired = {i for i, _ in pairs}
    skipped: list[tuple[float, str]] = [
        (t_rgb[i], f"no depth image within {max_difference} s") for i in range(len(rgb)) if i not in paired
    ]
    refs = []
    for i, j in pairs:
        k = int(np.searchsorted(pose_ts, t_rgb[i]))
        k = min((c for c in (k - 1, k) if 0 <= c < len(pose_ts)), key=lambda c: abs(pose_ts[c] - t_rgb[i]))
        if abs(pose_ts[k] - t_rgb[i]) >= max_difference:
            skipped.append((t_rgb[i], f"no ground-truth pose within {max_difference} s"))
            continue
        pose = checked_pose(poses[k], f"{gt_path} entry at t={pose_ts[k]:.6f}")
        refs.append(
            TumFrameRef(seq_dir / rgb[i][1][0], seq_dir / depth[j][1][0], float(t_rgb[i]), float(t_depth[j]),
                        float(pose_ts[k]), pose)
        )
    for t, why in skipped:
        log.debug("%s: skipping rgb frame t=%.6f: %s", seq_dir, t, why)
    if skipped:
        log.warning(
            "%s: skipped %d of %d rgb frames without association, e.g. t=%.6f (%s)",
            seq_dir, len(skipped), len(rgb), skipped[0][0], skipped[0][1],
        )
    if not refs:
        raise SceneError(f"{seq_dir}: no rgb frame has both a depth image and a pose within {max_difference} s")
    return refs


def read_tum_frame(ref: TumFrameRef, K: np.ndarray, frame_id: str = "") -> Frame:
    """Load one associated frame: colour uint8, depth metres (PNG / 5000), timestamp = rgb stamp."""
    color, depth = read_rgbd(ref.rgb_path, ref.depth_path, TUM_DEPTH_SCALE)
    return Frame(color=color, depth=depth, K=K, pose=ref.pose, frame_id=frame_id, timestamp=ref.t_rgb)


def iter_tum_frames(
    seq_dir: str | os.PathLike,
    K=None,
    stride: int = 1,
    max_frames: int | None = None,
    max_difference: float = 0.02,
):
    """Frames of a TUM sequence read in place (ids ``000000``…, in rgb-timestamp order)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    K = tum_intrinsics(seq_dir) if K is None else _as_K(K, "K")
    refs = read_tum_sequence(seq_dir, max_difference)[::stride][:max_frames]
    for n, ref in enumerate(refs):
        yield read_tum_frame(ref, K, f"{n:06d}")


def convert_tum(
    seq_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    K=None,
    max_difference: float = 0.02,
    color_format: str = "png",
) -> Path:
    """Convert a TUM sequence into a canonical scene folder.

    Depth keeps TUM's units (meta.yaml ``depth_scale: 5000``), so PNG values are copied exactly.
    Frames are the associated rgb frames, every `stride`-th, at most `max_frames`, with ids
    ``000000``…; ``timestamps.txt`` lists ``frame_id t_rgb t_depth t_pose`` per frame (seconds)
    and meta.yaml's extra records the sequence, K and the file name. `K`: 3x3 matrix or
    (fx, fy, cx, cy); default from the folder name (freiburg1/2/3). All-or-nothing."""
    seq_dir = Path(seq_dir)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    K = tum_intrinsics(seq_dir) if K is None else _as_K(K, "K")
    refs = read_tum_sequence(seq_dir, max_difference)[::stride][:max_frames]
    ids = [f"{n:06d}" for n in range(len(refs))]
    lines = ["# frame_id t_rgb t_depth t_pose (seconds, TUM clock)"]
    lines += [f"{fid} {r.t_rgb:.6f} {r.t_depth:.6f} {r.t_pose:.6f}" for fid, r in zip(ids, refs, strict=True)]
    extra = {
        "dataset": "tum-rgbd",
        "sequence": seq_dir.resolve().name,
        "intrinsics_fx_fy_cx_cy": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
        "timestamps_file": TIMESTAMPS_FILE,
        "association_max_difference_s": float(max_difference),
    }

    def write(tmp: Path) -> None:
        frames = (read_tum_frame(r, K, fid) for fid, r in zip(ids, refs, strict=True))
        write_scene(tmp, frames, depth_scale=TUM_DEPTH_SCALE, color_format=color_format, source="tum-rgbd",
                    extra_meta=extra)
        atomic_write_bytes(tmp / TIMESTAMPS_FILE, ("\n".join(lines) + "\n").encode())

    return write_scene_atomically(out_dir, write)


def read_timestamps(scene_dir: str | os.PathLike) -> dict[str, float]:
    """``timestamps.txt`` of a converted scene → {frame_id: rgb timestamp (s)}."""
    path = require_file(Path(scene_dir) / TIMESTAMPS_FILE, "timestamps file")
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        try:
            out[tok[0]] = float(tok[1])
        except (IndexError, ValueError):
            raise SceneError(f"{path}:{lineno}: expected 'frame_id t_rgb …', got {line[:80]!r}") from None
    return out
