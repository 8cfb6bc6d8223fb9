import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pgov3d_core.geometry import (
    GeometryError,
    backproject,
    match_frames,
    pack_keys,
    project,
    repeated_grid_sampling,
    unpack_keys,
    voxelize,
)


def random_pose(rng, scale=3.0):
    pose = np.eye(4)
    pose[:3, :3] = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    pose[:3, 3] = rng.uniform(-scale, scale, 3)
    return pose


def reference_backproject(depth, K, pose, stride=1, max_depth=None):
    """Straightforward per-pixel Eq. 1, for comparison."""
    pts, idx = [], []
    Kinv = np.linalg.inv(K)
    h, w = depth.shape
    for v in range(0, h, stride):
        for u in range(0, w, stride):
            d = depth[v, u]
            if not np.isfinite(d) or d <= 0 or (max_depth is not None and d > max_depth):
                continue
            cam = d * (Kinv @ np.array([u, v, 1.0]))
            pts.append((pose @ np.append(cam, 1.0))[:3])
            idx.append(v * w + u)
    return np.array(pts).reshape(-1, 3), np.array(idx, dtype=np.int64)


@pytest.mark.parametrize("stride", [1, 3])
def test_backproject_matches_per_pixel_reference(rng, stride):
    h, w = 24, 32
    K = np.array([[28.0, 0.0, 15.3], [0.0, 27.0, 11.7], [0.0, 0.0, 1.0]])
    depth = rng.uniform(0.3, 6.0, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = 0.0
    depth[0, 1] = np.nan
    depth[2, 3] = np.inf
    depth[4, 5] = 9.0
    pose = random_pose(rng)
    pts, idx = backproject(depth, K, pose, stride=stride, max_depth=8.0)
    ref_pts, ref_idx = reference_backproject(depth.astype(np.float64), K, pose, stride, max_depth=8.0)
    assert np.array_equal(idx.numpy(), ref_idx)
    np.testing.assert_allclose(pts.numpy(), ref_pts, atol=1e-5, rtol=1e-6)
    assert 4 * w + 5 not in set(idx.tolist())  # beyond max range


def test_backproject_then_project_returns_the_pixels(rng):
    h, w = 20, 30
    K = np.array([[25.0, 0.0, 14.5], [0.0, 25.0, 9.5], [0.0, 0.0, 1.0]])
    depth = rng.uniform(0.5, 3.0, (h, w)).astype(np.float32)
    pose = random_pose(rng)
    pts, idx = backproject(depth, K, pose)
    u, v, z, inside = project(pts, K, pose, h, w)
    assert bool(inside.all())
    np.testing.assert_allclose(u.numpy(), (idx % w).numpy(), atol=1e-3)
    np.testing.assert_allclose(v.numpy(), (idx // w).numpy(), atol=1e-3)
    np.testing.assert_allclose(z.numpy(), depth.reshape(-1)[idx.numpy()], atol=1e-4)


@pytest.mark.parametrize(
    "pose_edit, message",
    [
        (lambda p: p.__setitem__((0, 0), np.nan), "NaN"),
        (lambda p: p.__setitem__((0, 0), 2.0), "orthonormal"),
        (lambda p: p.__setitem__((slice(0, 3), 0), -p[:3, 0]), "determinant"),
    ],
)
def test_backproject_rejects_non_rigid_pose(pose_edit, message):
    pose = np.eye(4)
    pose_edit(pose)
    with pytest.raises(GeometryError, match=message):
        backproject(np.ones((4, 4), np.float32), np.diag([2.0, 2.0, 1.0]), pose)


def test_backproject_rejects_zero_focal_length():
    with pytest.raises(GeometryError, match="focal"):
        backproject(np.ones((4, 4), np.float32), np.diag([0.0, 2.0, 1.0]), np.eye(4))


def test_keys_round_trip_and_voxelize(rng):
    coords = torch.from_numpy(rng.integers(-(1 << 20), (1 << 20) - 1, (1000, 3)))
    assert torch.equal(unpack_keys(pack_keys(coords)), coords)
    with pytest.raises(GeometryError):
        pack_keys(torch.tensor([[1 << 21, 0, 0]]))
    points = torch.tensor([[0.01, 0.01, 0.01], [0.015, 0.001, 0.019], [0.05, 0.0, 0.0], [-0.01, 0.0, 0.0]])
    vox, inverse, counts = voxelize(points, 0.02)
    assert vox.tolist() == [[-1, 0, 0], [0, 0, 0], [2, 0, 0]]
    assert inverse.tolist() == [1, 1, 2, 0]
    assert counts.tolist() == [1, 2, 1]


def test_repeated_grid_sampling_covers_every_point_once_per_voxel_slot(rng):
    points = torch.from_numpy(rng.uniform(0, 0.3, (2000, 3)).astype(np.float32))
    passes = repeated_grid_sampling(points, 0.05, torch.Generator().manual_seed(0))
    _, inverse, counts = voxelize(points, 0.05)
    assert len(passes) == int(counts.max())
    for p in passes:  # one point per occupied voxel in every pass
        assert torch.equal(torch.sort(inverse[p]).values, torch.arange(len(counts)))
    covered = torch.unique(torch.cat(passes))
    assert covered.numel() == points.shape[0]
    # Each voxel's points appear exactly once within its first n_v passes.
    first = torch.cat([p[counts[inverse[p]] > k] for k, p in enumerate(passes)])
    assert torch.equal(torch.sort(first).values, torch.arange(points.shape[0]))


def test_match_frames_pairs_same_physical_points(rng):
    surface = rng.uniform(0, 1, (5000, 3)).astype(np.float32)
    a = torch.from_numpy(surface[:3000])
    b_rows = np.arange(2000, 5000)
    b = torch.from_numpy(surface[b_rows] + rng.normal(0, 1e-4, (3000, 3)).astype(np.float32))
    pairs = match_frames(a, b, 0.01, generator=torch.Generator().manual_seed(0))
    assert pairs.shape[1] == 2 and pairs.shape[0] > 100
    dist = torch.linalg.norm(a[pairs[:, 0]] - b[pairs[:, 1]], dim=1)
    assert float(dist.max()) < 0.01 * np.sqrt(3) + 1e-3
    assert len(set(pairs[:, 0].tolist())) == pairs.shape[0]  # one pair per shared voxel
    capped = match_frames(a, b, 0.01, max_pairs=50, generator=torch.Generator().manual_seed(0))
    assert capped.shape == (50, 2)
    assert match_frames(a, b[:0], 0.01).shape == (0, 2)
