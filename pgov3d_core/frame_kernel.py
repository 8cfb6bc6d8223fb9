"""Fused CPU kernel for integrating one RGB-D frame: back-projection (paper Eq. 1), voxel keys and
the merge of runs of equal keys, in one pass over the pixels.

Why hand-written: done with eager torch ops, the same work is ~20 full passes over the 307,200
pixels of a 640×480 frame (mask, nonzero, three gathers, the camera and world transforms, floor,
offset, range check, shifts, the run comparison, cumsum, colour gather, concat, index_add), each
memory-bound, which costs more than the sort that follows. No installable package fuses them for
an arbitrary map layout (Open3D's VoxelBlockGrid integrates TSDF blocks, not per-voxel means), so
this is ~60 lines of numba. The torch path (`geometry.backproject` + `VoxelMap.integrate_points`)
stays the reference and the path for CUDA devices; tests check that both give the same map.

The kernel releases the GIL (`nogil`), so the node's integration thread runs beside its executor.
"""

from __future__ import annotations

import logging

import numpy as np

from .geometry import _KEY_BITS, _KEY_MASK, _KEY_OFFSET

log = logging.getLogger(__name__)

try:  # numba is a pinned dependency; the torch path still works without it (e.g. a minimal install)
    import numba
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None


def available() -> bool:
    return numba is not None


def _floor_int_py(x):
    """floor(x) as int64 without a libm call (math.floor is not inlined: it tripled the kernel's
    time): truncate, then step down where truncation rounded a negative value up."""
    t = np.int64(x)
    return t - np.int64(np.float32(t) > x)


def _store_run_py(run_sums, run_counts, r, sx, sy, sz, sr, sg, sb, count):
    """Write one finished run's sums (xyz, rgb) and point count."""
    run_sums[r, 0] = sx
    run_sums[r, 1] = sy
    run_sums[r, 2] = sz
    run_sums[r, 3] = sr
    run_sums[r, 4] = sg
    run_sums[r, 5] = sb
    run_counts[r] = count


def _frame_runs_py(depth, color, labels, fx, fy, cx, cy, skew, rot, trans, stride, min_depth, max_depth,
                   voxel, run_keys, run_sums, run_counts, point_run, point_label):
    """Fill run arrays for one frame; returns (n_runs, n_points, out_of_range).

    A point is taken from every `stride`-th pixel in u and v whose depth is finite, > min_depth and
    <= max_depth, in row-major order, exactly as `geometry.backproject` orders them, and computed
    with the same float32 operations in the same order (so keys agree with the torch path except
    for points within rounding of a voxel face); consecutive points with the same voxel key form
    one run (sum of xyz and rgb, point count). When `point_run` has room, each point's run index
    and its pixel's label are written too.
    """
    h, w = depth.shape
    want_points = point_run.shape[0] > 0
    has_labels = labels.shape[0] > 0
    inv_voxel = np.float32(1.0) / voxel  # torch divides by a scalar as a multiply by its reciprocal
    # (u - cx) / fx per column: the same float32 value backproject computes per pixel.
    col = np.empty(w, np.float32)
    for u in range(w):
        col[u] = (np.float32(u) - cx) / fx
    # Locals, not array reads in the loop: the output arrays could alias them as far as LLVM knows.
    r00, r01, r02 = rot[0, 0], rot[0, 1], rot[0, 2]
    r10, r11, r12 = rot[1, 0], rot[1, 1], rot[1, 2]
    r20, r21, r22 = rot[2, 0], rot[2, 1], rot[2, 2]
    t0, t1, t2 = trans[0], trans[1], trans[2]
    n_runs = 0
    n_points = 0
    prev_key = np.int64(-1)
    # The open run is accumulated in locals and written out when the key changes.
    sx = sy = sz = sr = sg = sb = np.float32(0.0)
    count = 0
    for v in range(0, h, stride):
        row = (np.float32(v) - cy) / fy
        for u in range(0, w, stride):
            z = depth[v, u]
            # NaN fails every comparison, so one test rejects NaN, 0, negative, too far and +inf
            # (max_depth is at most float32's largest finite value).
            if not (z > min_depth and z <= max_depth):
                continue
            y_cam = row * z
            if skew == 0.0:
                x_cam = col[u] * z
            else:
                x_cam = ((np.float32(u) - cx) - skew * (y_cam / z)) / fx * z
            px = r00 * x_cam + r01 * y_cam + r02 * z + t0
            py = r10 * x_cam + r11 * y_cam + r12 * z + t1
            pz = r20 * x_cam + r21 * y_cam + r22 * z + t2
            kx = _floor_int(px * inv_voxel) + _KEY_OFFSET
            ky = _floor_int(py * inv_voxel) + _KEY_OFFSET
            kz = _floor_int(pz * inv_voxel) + _KEY_OFFSET
            if kx < 0 or kx > _KEY_MASK or ky < 0 or ky > _KEY_MASK or kz < 0 or kz > _KEY_MASK:
                return n_runs, n_points, True
            key = (kx << (2 * _KEY_BITS)) | (ky << _KEY_BITS) | kz
            if key != prev_key:
                if count:
                    _store_run(run_sums, run_counts, n_runs - 1, sx, sy, sz, sr, sg, sb, count)
                run_keys[n_runs] = key
                n_runs += 1
                prev_key = key
                sx = sy = sz = sr = sg = sb = np.float32(0.0)
                count = 0
            sx += px
            sy += py
            sz += pz
            sr += np.float32(color[v, u, 0])
            sg += np.float32(color[v, u, 1])
            sb += np.float32(color[v, u, 2])
            count += 1
            if want_points:
                point_run[n_points] = n_runs - 1
                point_label[n_points] = labels[v, u] if has_labels else -1
            n_points += 1
    if count:
        _store_run(run_sums, run_counts, n_runs - 1, sx, sy, sz, sr, sg, sb, count)
    return n_runs, n_points, False


if numba is not None:
    _floor_int = numba.njit(inline="always")(_floor_int_py)
    _store_run = numba.njit(inline="always")(_store_run_py)
    _frame_runs = numba.njit(cache=True, nogil=True)(_frame_runs_py)
else:  # pragma: no cover
    _floor_int = _store_run = _frame_runs = None


def frame_runs(depth: np.ndarray, color: np.ndarray, labels: np.ndarray | None, K: np.ndarray,
               cam_to_world: np.ndarray, stride: int, min_depth: float, max_depth: float | None,
               voxel_size: float):
    """Run arrays of one validated frame (see `_frame_runs_py`): run_keys (R,) int64, run_sums
    (R, 6) float32 (xyz, rgb), run_counts (R,) int64, n_points, and — when `labels` is given —
    point_run (P,) int64 and point_label (P,) int64 of every point. Raises ValueError when a voxel
    coordinate falls outside the key range."""
    h, w = depth.shape
    capacity = ((h + stride - 1) // stride) * ((w + stride - 1) // stride)
    run_keys = np.empty(capacity, np.int64)
    run_sums = np.empty((capacity, 6), np.float32)
    run_counts = np.empty(capacity, np.int64)
    n_point_slots = capacity if labels is not None else 0
    point_run = np.empty(n_point_slots, np.int64)
    point_label = np.empty(n_point_slots, np.int64)
    label_image = (np.ascontiguousarray(labels, dtype=np.int64) if labels is not None
                   else np.empty((0, 0), np.int64))
    K = np.asarray(K, np.float32)
    pose = np.asarray(cam_to_world, np.float32)
    f32 = np.float32
    n_runs, n_points, out_of_range = _frame_runs(
        np.ascontiguousarray(depth, dtype=np.float32), np.ascontiguousarray(color, dtype=np.uint8), label_image,
        f32(K[0, 0]), f32(K[1, 1]), f32(K[0, 2]), f32(K[1, 2]), f32(K[0, 1]),
        np.ascontiguousarray(pose[:3, :3]), np.ascontiguousarray(pose[:3, 3]), int(stride),
        f32(min_depth), f32(np.finfo(np.float32).max if max_depth is None else max_depth), f32(voxel_size),
        run_keys, run_sums, run_counts, point_run, point_label)
    if out_of_range:
        raise ValueError(f"voxel coordinates outside ±{_KEY_OFFSET} voxels; reduce the scene extent")
    out = dict(run_keys=run_keys[:n_runs], run_sums=run_sums[:n_runs], run_counts=run_counts[:n_runs],
               n_points=int(n_points))
    if labels is not None:
        out["point_run"] = point_run[:n_points]
        out["point_label"] = point_label[:n_points]
    return out


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) before the first real frame, so a node's first
    frame does not wait ~1 s for the JIT while its camera keeps publishing."""
    if numba is None:
        return
    depth = np.ones((2, 2), np.float32)
    frame_runs(depth, np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int64), np.eye(3), np.eye(4), 1, 0.0,
               None, 0.02)
