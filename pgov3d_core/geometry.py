"""Geometry: back-projection (paper Eq. 1), rigid transforms, voxelisation, grid sampling and
frame-overlap matching. Vectorised torch; every function runs on the device of its inputs."""

from __future__ import annotations

import math

import numpy as np
import torch

# Voxel coordinates are packed into one int64 key (21 bits per axis, offset to be non-negative),
# so uniqueness and lookups are single-column sorts/searches. Range: ±2^20 voxels per axis
# (±20 km at 2 cm).
_KEY_BITS = 21
_KEY_OFFSET = 1 << (_KEY_BITS - 1)
_KEY_MASK = (1 << _KEY_BITS) - 1


class GeometryError(ValueError):
    """Invalid geometric input: non-rigid pose, bad intrinsics, mismatched sizes."""


def as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def check_rigid(pose, tol: float = 1e-3, name: str = "pose") -> np.ndarray:
    """Validate a 4x4 rigid transform (finite, orthonormal rotation, det +1, last row 0 0 0 1).

    Returns it as float64 numpy; raises GeometryError naming `name` otherwise."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise GeometryError(f"{name}: expected a 4x4 matrix, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise GeometryError(f"{name}: contains NaN or inf")
    rot = pose[:3, :3]
    if not np.allclose(rot @ rot.T, np.eye(3), atol=tol):
        raise GeometryError(f"{name}: rotation is not orthonormal (R·Rᵀ ≠ I)")
    det = np.linalg.det(rot)
    if abs(det - 1.0) > tol:
        raise GeometryError(f"{name}: rotation determinant is {det:.4f}, expected +1")
    if not np.allclose(pose[3], [0, 0, 0, 1], atol=tol):
        raise GeometryError(f"{name}: last row is {pose[3].tolist()}, expected [0, 0, 0, 1]")
    return pose


def check_intrinsics(K, name: str = "intrinsics") -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (4, 4):  # ScanNet stores 4x4 intrinsics
        K = K[:3, :3]
    if K.shape != (3, 3):
        raise GeometryError(f"{name}: expected a 3x3 (or 4x4) matrix, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise GeometryError(f"{name}: contains NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise GeometryError(f"{name}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    return K


def valid_depth_mask(depth: torch.Tensor, min_depth: float = 0.0, max_depth: float | None = None):
    """True where depth is finite, > min_depth and (if given) <= max_depth."""
    mask = torch.isfinite(depth) & (depth > min_depth)
    if max_depth is not None:
        mask &= depth <= max_depth
    return mask


def backproject(
    depth,
    K,
    cam_to_world,
    stride: int = 1,
    min_depth: float = 0.0,
    max_depth: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper Eq. 1: pixel (u, v) with depth d → world point T · (d · K⁻¹ [u, v, 1]ᵀ).

    Args:
        depth: (H, W) depth in metres (numpy or torch); 0, NaN, inf and > max_depth are invalid.
        K: 3x3 pinhole intrinsics of the depth image (pixel centres at integer coordinates,
           the ScanNet/OpenCV convention).
        cam_to_world: 4x4 camera-to-world pose T.
        stride: use every `stride`-th pixel in u and v.
    Returns:
        points: (N, 3) float32 world coordinates, on depth's device.
        pixel_index: (N,) int64 flat index v * W + u of each point's pixel, so per-pixel labels
            or features transfer to points with `image.reshape(-1)[pixel_index]`.
    """
    depth = as_tensor(depth, dtype=torch.float32)
    if depth.ndim != 2:
        raise GeometryError(f"depth: expected an (H, W) image, got shape {tuple(depth.shape)}")
    K = check_intrinsics(K)
    pose = check_rigid(cam_to_world)
    device = depth.device
    h, w = depth.shape
    if stride > 1:
        vs = torch.arange(0, h, stride, device=device)
        us = torch.arange(0, w, stride, device=device)
        d = depth[::stride, ::stride]
    else:
        vs = torch.arange(h, device=device)
        us = torch.arange(w, device=device)
        d = depth
    mask = valid_depth_mask(d, min_depth, max_depth)
    vv, uu = torch.nonzero(mask, as_tuple=True)
    z = d[vv, uu]
    v = vs[vv]
    u = us[uu]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # K⁻¹ for a pinhole with skew K[0,1] (almost always 0, but honoured).
    skew = K[0, 1]
    y_cam = (v.to(torch.float32) - cy) / fy * z
    x_cam = ((u.to(torch.float32) - cx) - skew * (y_cam / z)) / fx * z
    cam = torch.stack([x_cam, y_cam, z], dim=1)
    points = transform_points(cam, pose)
    pixel_index = v * w + u
    return points, pixel_index


def rotation_z(angle: float) -> torch.Tensor:
    """(3, 3) float32 rotation by `angle` radians about the z (vertical) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float32)


def turned(xyz: torch.Tensor, angle: float) -> torch.Tensor:
    """`xyz` rotated by `angle` about the vertical axis through its centroid (unchanged for 0)."""
    if angle == 0.0 or xyz.shape[0] == 0:
        return xyz
    center = xyz.mean(0)
    return (xyz - center) @ rotation_z(angle).T + center


def transform_points(points: torch.Tensor, pose) -> torch.Tensor:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    pose_t = as_tensor(pose, dtype=torch.float32, device=points.device)
    return points @ pose_t[:3, :3].T + pose_t[:3, 3]


def project(points_world: torch.Tensor, K, cam_to_world, height: int, width: int):
    """World points → (u, v) pixel coordinates, camera depth z, and an in-image mask (z > 0)."""
    K = check_intrinsics(K)
    world_to_cam = np.linalg.inv(check_rigid(cam_to_world))
    cam = transform_points(points_world, world_to_cam)
    z = cam[:, 2]
    safe_z = torch.where(z > 1e-6, z, torch.ones_like(z))
    u = K[0, 0] * cam[:, 0] / safe_z + K[0, 1] * cam[:, 1] / safe_z + K[0, 2]
    v = K[1, 1] * cam[:, 1] / safe_z + K[1, 2]
    inside = (z > 1e-6) & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
    return u, v, z, inside


# --------------------------------------------------------------------------- voxelisation


def voxel_coords(points: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """Integer voxel coordinates floor(p / voxel_size), int64 (N, 3)."""
    return torch.floor(points / voxel_size).to(torch.int64)


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 voxel coordinates → (N,) int64 keys (21 bits per axis)."""
    c = coords + _KEY_OFFSET
    if c.numel() and (c.min() < 0 or c.max() > _KEY_MASK):
        raise GeometryError(f"voxel coordinates outside ±{_KEY_OFFSET} voxels; reduce the scene extent")
    return (c[:, 0] << (2 * _KEY_BITS)) | (c[:, 1] << _KEY_BITS) | c[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_keys."""
    x = (keys >> (2 * _KEY_BITS)) & _KEY_MASK
    y = (keys >> _KEY_BITS) & _KEY_MASK
    z = keys & _KEY_MASK
    return torch.stack([x, y, z], dim=1) - _KEY_OFFSET


def voxelize(points: torch.Tensor, voxel_size: float):
    """Unique voxels of a point set.

    Returns (coords (M, 3) int64 sorted by key, inverse (N,) int64 point → voxel row,
    counts (M,) points per voxel)."""
    keys = pack_keys(voxel_coords(points, voxel_size))
    unique_keys, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    return unpack_keys(unique_keys), inverse, counts


def repeated_grid_sampling(
    points: torch.Tensor, voxel_size: float, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Repeated random grid sampling: each pass keeps one point per occupied voxel, and passes
    repeat until every point has been kept once (pass k keeps each voxel's (k mod n_v)-th point
    in a random order, so the number of passes is the largest per-voxel count).

    Returns a list of index tensors into `points`; their union covers every point exactly once
    for voxels' first n_v passes (points of sparse voxels are repeated in later passes)."""
    if points.shape[0] == 0:
        return []
    order, _, counts, starts = _group_points_by_voxel(points, voxel_size, generator)
    passes = int(counts.max())
    return [order[starts + (k % counts)] for k in range(passes)]


def random_grid_sample(points: torch.Tensor, voxel_size: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of one random point per occupied voxel: a single pass of repeated grid sampling."""
    if points.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=points.device)
    return _one_random_point_per_voxel(points, voxel_size, generator)[1]


def match_frames(
    points_a: torch.Tensor,
    points_b: torch.Tensor,
    voxel_size: float,
    max_pairs: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pairs of points of two partial clouds that are the same physical point: both fall in the
    same voxel of a fine grid (`voxel_size`, e.g. 1–2 cm). One random pair per shared voxel,
    at most `max_pairs` (random subset).

    Returns (P, 2) int64 indices (row into points_a, row into points_b); P may be 0."""
    device = points_a.device
    if points_a.shape[0] == 0 or points_b.shape[0] == 0:
        return torch.zeros((0, 2), dtype=torch.int64, device=device)
    first_a = _one_random_point_per_voxel(points_a, voxel_size, generator)
    first_b = _one_random_point_per_voxel(points_b, voxel_size, generator)
    keys_a, idx_a = first_a
    keys_b, idx_b = first_b
    pos = torch.searchsorted(keys_b, keys_a).clamp(max=keys_b.shape[0] - 1)
    shared = keys_b[pos] == keys_a
    pairs = torch.stack([idx_a[shared], idx_b[pos[shared]]], dim=1)
    if max_pairs is not None and pairs.shape[0] > max_pairs:
        pick = torch.randperm(pairs.shape[0], generator=generator)[:max_pairs]
        pairs = pairs[pick.to(device)]
    return pairs


def _one_random_point_per_voxel(points, voxel_size, generator):
    """(sorted unique voxel keys, index of one random point in each)."""
    order, unique_keys, _, starts = _group_points_by_voxel(points, voxel_size, generator)
    return unique_keys, order[starts]


def _group_points_by_voxel(points, voxel_size, generator):
    """Point order grouped by voxel key (ascending), shuffled within each voxel.

    Returns (order, unique_keys, counts, starts) where voxel j's points are
    order[starts[j] : starts[j] + counts[j]]."""
    keys = pack_keys(voxel_coords(points, voxel_size))
    rand = torch.rand(points.shape[0], generator=generator).to(points.device)
    # Shuffle, then stable-sort by key: grouped per voxel, random order within each group.
    order = torch.argsort(rand)
    order = order[torch.sort(keys[order], stable=True).indices]
    unique_keys, counts = torch.unique_consecutive(keys[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return order, unique_keys, counts, starts
