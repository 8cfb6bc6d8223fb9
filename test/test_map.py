import numpy as np
import pytest
import torch

from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.geometry import pack_keys, voxel_coords
from pgov3d_core.map import FIELDS, VoxelField, VoxelMap

K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def plane_frame(z=2.0, x_offset=0.0, color=(200, 100, 50), h=36, w=48, frame_id="f"):
    """A camera looking at a fronto-parallel wall at depth z, shifted along x."""
    pose = np.eye(4)
    pose[0, 3] = x_offset
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = color
    return Frame(rgb, np.full((h, w), z, np.float32), K, pose, frame_id=frame_id)


def test_integrate_accumulates_counts_colour_and_positions():
    vmap = VoxelMap(voxel_size=0.05)
    stats = vmap.integrate(plane_frame(color=(200, 100, 50)))
    n = len(vmap)
    assert stats.voxels_new == n == stats.voxels_touched and stats.points == 36 * 48
    assert int(vmap.counts().sum()) == 36 * 48
    stats2 = vmap.integrate(plane_frame(color=(100, 100, 150)))
    assert stats2.voxels_new == 0 and len(vmap) == n
    assert torch.equal(vmap.colors(), torch.tensor([[150, 100, 100]], dtype=torch.uint8).expand(n, 3))
    assert int(vmap.counts().sum()) == 2 * 36 * 48
    # Voxel positions are the mean of their points: all on the plane z = 2.
    assert torch.allclose(vmap.voxel_means()[:, 2], torch.full((n,), 2.0))
    keys = pack_keys(voxel_coords(vmap.voxel_means(), 0.05))
    assert torch.equal(keys, vmap.keys())


def test_integrate_new_region_extends_map_and_index_stays_sorted():
    vmap = VoxelMap(voxel_size=0.05)
    vmap.integrate(plane_frame(x_offset=0.0))
    n0 = len(vmap)
    stats = vmap.integrate(plane_frame(x_offset=1.0))
    assert 0 < stats.voxels_new < stats.voxels_touched and len(vmap) == n0 + stats.voxels_new
    assert bool((vmap._sorted_keys[1:] > vmap._sorted_keys[:-1]).all())
    assert torch.equal(vmap.keys()[vmap._sorted_slots], vmap._sorted_keys)


def test_bad_frames_are_rejected_and_leave_map_unchanged():
    vmap = VoxelMap(voxel_size=0.05)
    vmap.integrate(plane_frame())
    before = vmap.state_dict()
    bad_size = plane_frame()
    bad_size.color = bad_size.color[:-1]
    invalid_depth = plane_frame()
    invalid_depth.depth[:] = np.nan
    bad_pose = plane_frame()
    bad_pose.pose[0, 0] = 3.0
    nan_pose = plane_frame()
    nan_pose.pose[1, 3] = np.nan
    for frame, msg in ((bad_size, "does not match"), (invalid_depth, "no valid depth"),
                       (bad_pose, "orthonormal"), (nan_pose, "NaN")):
        with pytest.raises(FrameError, match=msg):
            vmap.integrate(frame)
    after = vmap.state_dict()
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_cap_evicts_least_recently_seen_and_memory_stays_flat():
    vmap = VoxelMap(voxel_size=0.05, max_voxels=2000, evict_fraction=0.1)
    vmap.set_features(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 8))  # features are capped too
    frame = plane_frame(h=12, w=16)
    capacities = []
    for i in range(10_000):  # a robot that never returns: every frame sees new ground
        frame.pose[0, 3] = 0.5 * i
        frame.frame_id = str(i)
        vmap.integrate(frame)
        assert len(vmap) <= 2000
        capacities.append(vmap.capacity)
    assert capacities[-1] == capacities[100] and vmap.features.shape[0] == len(vmap)
    assert vmap._features.shape[0] == vmap.capacity  # no growth once the cap is reached
    # The newest frame is always fully present; the oldest areas are gone.
    assert float(vmap.voxel_means()[:, 0].max()) > 0.5 * 9999 - 1.2  # the image spans x_cam ∈ [-1.2, -0.4] m
    assert int(vmap.last_seen().min()) > 9000
    assert bool((vmap._sorted_keys[1:] > vmap._sorted_keys[:-1]).all())
    assert torch.equal(vmap.keys()[vmap._sorted_slots], vmap._sorted_keys)


class TaggedMap(VoxelMap):
    """A map with one more per-voxel field: this line is the whole change."""
    fields = FIELDS + (VoxelField("tag", torch.int16, 2),)


def test_a_field_added_to_the_table_grows_compacts_saves_and_loads(tmp_path):
    vmap = TaggedMap(voxel_size=0.05, max_voxels=1500, evict_fraction=0.2)
    home = plane_frame(h=12, w=16)
    vmap.integrate(home)
    assert vmap._tag.dtype == torch.int16 and vmap._tag.shape == (vmap.capacity, 2)
    assert vmap.bytes_per_voxel() == VoxelMap().bytes_per_voxel() + 2 * 2
    home_keys = vmap.keys().clone()

    def tag_of(keys):
        return torch.stack([keys % 30000, keys % 7 + 1], 1).to(torch.int16)

    vmap._tag[: len(vmap)] = tag_of(home_keys)
    capacity, evicted = vmap.capacity, 0
    frame = plane_frame(h=12, w=16)
    for i in range(1, 30):  # new ground every frame (new slots, growth, eviction); home stays fresh
        frame.pose[0, 3] = 0.5 * i
        evicted += vmap.integrate(frame).voxels_evicted
        vmap.integrate(home)
    assert evicted > 0 and vmap.capacity > capacity
    at_home = torch.isin(vmap.keys(), home_keys)
    assert int(at_home.sum()) == len(home_keys)  # home was never evicted, its tags moved with it
    assert torch.equal(vmap._tag[: len(vmap)][at_home], tag_of(vmap.keys()[at_home]))
    assert not bool(vmap._tag[: len(vmap)][~at_home].any())  # new voxels start at zero

    path = vmap.save(tmp_path / "tagged.npz")
    assert np.array_equal(vmap.state_dict()["tag"], vmap._tag[: len(vmap)].numpy())
    loaded = TaggedMap.load(path)
    a, b = vmap.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    plain = VoxelMap.load(path)  # a map without the field ignores it
    assert "tag" not in plain.state_dict() and torch.equal(plain.keys(), vmap.keys())
    # A file written before the field existed loads with the field at zero.
    old = VoxelMap(voxel_size=0.05)
    old.integrate(home)
    upgraded = TaggedMap.load(old.save(tmp_path / "old.npz"))
    assert torch.equal(upgraded.keys(), old.keys()) and torch.equal(upgraded.counts(), old.counts())
    assert upgraded._tag.shape[0] >= len(old) and not bool(upgraded._tag.any())


def test_features_query_and_min_score():
    vmap = VoxelMap(voxel_size=0.05)
    vmap.integrate(plane_frame())
    n = len(vmap)
    with pytest.raises(ValueError, match="no features"):
        vmap.query(torch.ones(1, 4))
    feats = torch.zeros(n, 4)
    feats[: n // 2, 0] = 1.0  # first half looks like text 0
    feats[n // 2 :, 1] = 1.0
    feats[n // 2 :, 2] = 0.2
    vmap.set_features(torch.arange(n - 1), feats[: n - 1])  # last voxel has no feature
    assert not bool(vmap.changed()[: n - 1].any()) and bool(vmap.changed()[n - 1])
    text = torch.eye(4)[:2] * 3.0  # unnormalised on purpose
    res = vmap.query(text, min_score=0.5)
    assert res.labels[: n // 2].eq(0).all() and res.labels[n // 2 : n - 1].eq(1).all()
    assert int(res.labels[n - 1]) == -1 and torch.isnan(res.scores[n - 1])
    np.testing.assert_allclose(res.scores[n // 2 : n - 1].numpy(), 1 / np.sqrt(1.04), rtol=5e-3)  # 16-bit
    np.testing.assert_allclose(res.best_scores.numpy(), [1.0, 1 / np.sqrt(1.04)], rtol=5e-3)
    strict = vmap.query(text, min_score=0.99)
    assert strict.labels[n // 2 :].eq(-1).all() and strict.labels[: n // 2].eq(0).all()
    with pytest.raises(ValueError, match="dim"):
        vmap.query(torch.ones(1, 3))


@pytest.mark.parametrize("feature_dtype", ["bfloat16", "float16"])
def test_save_load_round_trip_exact(tmp_path, feature_dtype):
    vmap = VoxelMap(voxel_size=0.05, max_voxels=10_000, feature_dtype=feature_dtype)
    vmap.integrate(plane_frame())
    vmap.integrate(plane_frame(x_offset=0.7, color=(1, 2, 3)))
    vmap.set_features(torch.arange(len(vmap)), torch.randn(len(vmap), 8))
    path = vmap.save(tmp_path / "map.npz")
    loaded = VoxelMap.load(path, feature_dtype=feature_dtype)
    assert torch.equal(loaded.features, vmap.features)
    a, b = vmap.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert loaded.voxel_size == 0.05 and loaded.max_voxels == 10_000
    # The loaded map keeps integrating into the same voxels.
    stats = loaded.integrate(plane_frame())
    assert stats.voxels_new == 0


def test_load_rejects_corrupt_file(tmp_path):
    bad = tmp_path / "map.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable pgov3d map"):
        VoxelMap.load(bad)
    vmap = VoxelMap(voxel_size=0.05)
    vmap.integrate(plane_frame())
    good = vmap.save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable pgov3d map"):
        VoxelMap.load(truncated)


def test_label_votes_majority_and_oracle_features(tmp_path):
    vmap = VoxelMap(voxel_size=0.05, num_label_classes=3)
    frame = plane_frame()
    labels = np.full((36, 48), -1, np.int32)
    labels[:, :24] = 0
    labels[:, 24:] = 2
    frame.labels = labels
    vmap.integrate(frame)
    relabelled = plane_frame()
    relabelled.labels = np.full((36, 48), 1, np.int32)
    relabelled.labels[:, 24:] = 2  # left half: 0 twice (below), 1 once → majority 0
    vmap.integrate(relabelled)
    vmap.integrate(frame)
    maj = vmap.majority_labels()
    left = vmap.voxel_means()[:, 0] < -0.3
    right = vmap.voxel_means()[:, 0] > 0.3
    assert maj[left].eq(0).all() and maj[right].eq(2).all()
    assert int(vmap.label_votes().sum()) == 3 * 36 * 48
    emb = torch.eye(3)
    assert vmap.set_features_from_labels(emb) == len(vmap)
    res = vmap.query(emb[[2, 0]])
    assert res.labels[right].eq(0).all() and res.labels[left].eq(1).all()
    loaded = VoxelMap.load(vmap.save(tmp_path / "m.npz"))
    assert torch.equal(loaded.label_votes(), vmap.label_votes())


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_follow_the_process_umask(tmp_path, umask):
    """Maps and checkpoints are shared between users and tools: their mode is what a plain
    open() would give (0666 & ~umask), not the 0600 of a temporary file."""
    import os
    import stat

    from pgov3d_core.training.checkpoint import atomic_torch_save

    m = VoxelMap(voxel_size=0.05)
    m.integrate(plane_frame())
    old = os.umask(umask)
    try:
        written = [m.save(tmp_path / "map.npz"), atomic_torch_save({"x": torch.ones(2)}, tmp_path / "c.pt")]
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert len(VoxelMap.load(written[0])) == len(m)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def _tilted_frame(seed: int, h=120, w=160):
    """A frame of a slanted, bumpy surface seen from a generic pose (no face sits on a voxel
    boundary), with invalid pixels of every kind and per-pixel labels."""
    rng = np.random.default_rng(seed)
    vv, uu = np.mgrid[0:h, 0:w]
    depth = (1.5 + 0.004 * uu + 0.002 * vv + 0.01 * np.sin(uu / 7.0) + rng.normal(0, 0.002, (h, w)))
    depth = depth.astype(np.float32)
    depth[rng.random((h, w)) < 0.03] = 0.0
    depth[rng.random((h, w)) < 0.02] = np.nan
    depth[rng.random((h, w)) < 0.01] = np.inf
    depth[rng.random((h, w)) < 0.01] = 9.0  # beyond max_depth below
    K = np.array([[140.0, 0.0, 79.5], [0.0, 140.0, 59.5], [0.0, 0.0, 1.0]])
    angle = 0.3 + seed
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    pose[:3, 3] = [0.37 + seed, -1.13, 0.71]
    color = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = rng.integers(-1, 6, (h, w))
    return Frame(color=color, depth=depth, K=K, pose=pose, labels=labels, frame_id=f"tilted{seed}")


@pytest.mark.parametrize("stride", [1, 3])
def test_fused_cpu_kernel_gives_the_torch_path_map(monkeypatch, stride):
    """The CPU path integrates frames with one fused kernel (frame_kernel); the torch path is the
    reference (and CUDA's path). Same points, same voxels, same means, counts and votes — up to
    points within float32 rounding of a voxel face."""
    from pgov3d_core import frame_kernel

    assert frame_kernel.available()
    frames = [_tilted_frame(s) for s in range(3)]
    fused = VoxelMap(voxel_size=0.02, max_depth=5.0, pixel_stride=stride, num_label_classes=6)
    fused_stats = [fused.integrate(f) for f in frames]
    monkeypatch.setattr(frame_kernel, "available", lambda: False)
    reference = VoxelMap(voxel_size=0.02, max_depth=5.0, pixel_stride=stride, num_label_classes=6)
    reference_stats = [reference.integrate(f) for f in frames]

    # Depth validity is a pure per-pixel test: the same points in both paths, exactly.
    assert [s.points for s in fused_stats] == [s.points for s in reference_stats]
    assert fused_stats[0].points > 0.9 * (120 // stride) * (160 // stride)
    a, b = fused.keys().numpy(), reference.keys().numpy()
    common, ia, ib = np.intersect1d(a, b, return_indices=True)
    assert len(common) >= 0.999 * max(len(a), len(b))
    same_count = fused.counts()[ia] == reference.counts()[ib]
    assert float(same_count.double().mean()) >= 0.999
    rows_a, rows_b = torch.from_numpy(ia)[same_count], torch.from_numpy(ib)[same_count]
    torch.testing.assert_close(fused.voxel_means()[rows_a], reference.voxel_means()[rows_b], atol=2e-6, rtol=0)
    torch.testing.assert_close(fused.colors()[rows_a], reference.colors()[rows_b], atol=1e-3, rtol=0)
    assert torch.equal(fused.label_votes()[rows_a], reference.label_votes()[rows_b])
    assert int(fused.label_votes().sum()) == int(reference.label_votes().sum())


def test_fused_kernel_rejects_coordinates_outside_the_key_range():
    frame = _tilted_frame(0)
    frame.pose[:3, 3] = [1e5, 0.0, 0.0]  # 5 million 2 cm voxels from the origin
    vmap = VoxelMap(voxel_size=0.02)
    with pytest.raises(FrameError, match="outside"):
        vmap.integrate(frame)
    assert len(vmap) == 0
