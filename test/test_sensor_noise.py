"""Synthetic RGB-D sensor errors (`pgov3d_core.data.synthetic.sensor.SensorNoise`): the depth noise
model's size, grazing-angle and edge behaviour, per-frame colour changes, determinism, and scenes
written with it (exact labels, poses and scan cloud; recorded settings checked on reuse)."""

import math

import numpy as np
import pytest

from pgov3d_core.data import Scene
from pgov3d_core.data.scene import read_ply_vertices
from pgov3d_core.data.synthetic import default_intrinsics, generate_dataset, generate_scene
from pgov3d_core.data.synthetic.sensor import SensorNoise

W, H = 160, 120
K = default_intrinsics(W, H)
GREY = np.full((H, W, 3), 128, np.uint8)


def plane_depth(z0: float, tilt_deg: float = 0.0) -> np.ndarray:
    """Z-depth image of a plane through (0, 0, z0) turned by `tilt_deg` about the camera's y axis
    (its normal (sin t, 0, -cos t)): z = z0 / (1 - tan t * x/z)."""
    u = np.arange(W, dtype=np.float64)
    x_over_z = (u - K[0, 2]) / K[0, 0]
    z = z0 / (1.0 - math.tan(math.radians(tilt_deg)) * x_over_z)
    return np.broadcast_to(z, (H, W)).astype(np.float32).copy()


def test_axial_noise_follows_the_kinect_model_and_leaves_no_bias():
    z0 = 3.0
    depth, _ = SensorNoise(seed=1).apply(plane_depth(z0), GREY, K, 0)
    inner = depth[2:-2, 2:-2]
    assert (inner > 0).all()  # a fronto-parallel plane: nothing dropped, no edges
    expected = 0.0012 + 0.0019 * (z0 - 0.4) ** 2  # 1.4 cm at 3 m
    err = inner - z0
    assert abs(err.std() - expected) < 0.1 * expected
    assert abs(err.mean()) < 0.002
    near, _ = SensorNoise(seed=1).apply(plane_depth(1.0), GREY, K, 0)
    assert (near[2:-2, 2:-2] - 1.0).std() < 0.3 * err.std()  # noise grows with distance


def test_surfaces_seen_edge_on_lose_their_depth():
    noise = SensorNoise(seed=2, depth_noise=False)
    front, _ = noise.apply(plane_depth(2.0, 0.0), GREY, K, 0)
    steep, _ = noise.apply(plane_depth(2.0, 82.0), GREY, K, 0)
    rows = slice(2, -2)
    assert (front[rows, 2:-2] > 0).all()
    # The 82 deg plane's incidence runs from ~53 deg to past 90 across the image: most pixels beyond
    # 85 deg are dropped, none below 70 deg.
    u = np.arange(W)
    x_over_z = (u - K[0, 2]) / K[0, 0]
    normal = np.array([math.sin(math.radians(82.0)), 0.0, -math.cos(math.radians(82.0))])
    rays = np.stack([x_over_z, np.zeros(W), np.ones(W)], 1)
    incidence = np.degrees(np.arccos(np.abs(rays @ normal) / np.linalg.norm(rays, axis=1)))
    valid_col = (plane_depth(2.0, 82.0)[0] > 0) & (plane_depth(2.0, 82.0)[0] < 50)
    low = (incidence < 68) & valid_col
    high = (incidence > 86) & valid_col
    assert low[2:-2].any() and high[2:-2].any()
    kept = (steep[rows] > 0).mean(axis=0)
    assert kept[2:-2][low[2:-2]].min() == 1.0
    assert kept[2:-2][high[2:-2]].max() < 0.1


def test_depth_edges_get_in_between_depths_or_none_and_keep_their_label_pixels():
    depth = np.full((H, W), 3.0, np.float32)
    depth[:, : W // 2] = 1.0  # a box edge: foreground 1 m, background 3 m
    noisy, _ = SensorNoise(seed=3, depth_noise=False).apply(depth, GREY, K, 0)
    edge = noisy[:, W // 2 - 1]  # the foreground column beside the step
    flying = (edge > 1.0 + 1e-3) & (edge < 3.0 - 1e-3)
    dropped = edge == 0
    assert 0.3 < flying.mean() < 0.7 and dropped.any()
    assert ((edge >= 1.0 - 1e-6) & (edge <= 3.0 + 1e-6) | dropped).all()
    others = np.delete(noisy, W // 2 - 1, axis=1)
    assert np.array_equal(others, np.delete(depth, W // 2 - 1, axis=1))  # away from the edge: untouched


def test_colour_changes_per_frame_and_everything_is_reproducible():
    noise = SensorNoise(seed=4)
    depth = plane_depth(2.0)
    d0, c0 = noise.apply(depth, GREY, K, 0)
    d0b, c0b = noise.apply(depth, GREY, K, 0)
    d1, c1 = noise.apply(depth, GREY, K, 1)
    assert np.array_equal(d0, d0b) and np.array_equal(c0, c0b)
    assert not np.array_equal(d0, d1)
    gain0, gain1 = c0.reshape(-1, 3).mean(0) / 128, c1.reshape(-1, 3).mean(0) / 128
    assert np.all(np.abs(gain0 - 1) < 0.17) and np.all(np.abs(gain1 - 1) < 0.17)
    assert np.abs(gain0 - gain1).max() > 0.005  # exposure / white balance differ between frames
    assert 1.0 < (c0.astype(float) - c0.reshape(-1, 3).mean(0)).std() < 4.0  # pixel noise, ~2 units
    assert SensorNoise(seed=5).apply(depth, GREY, K, 0)[0].tolist() != d0.tolist()


def test_noisy_scene_keeps_exact_labels_poses_and_scan_cloud(tmp_path):
    kw = {"n_frames": 3, "width": 64, "height": 48, "density": 400.0}
    exact = Scene(generate_scene(tmp_path / "exact", 7, **kw))
    noisy = Scene(generate_scene(tmp_path / "noisy", 7, sensor_noise=True, **kw))
    assert noisy.meta.extra["synthetic"]["sensor_noise"] is True
    assert exact.meta.extra["synthetic"]["sensor_noise"] is False
    for fid in exact.frame_ids:
        a, b = exact.frame(fid), noisy.frame(fid)
        assert np.array_equal(exact.labels(fid), noisy.labels(fid))
        assert np.allclose(a.pose, b.pose) and np.allclose(a.K, b.K)
        valid = b.depth > 0
        assert 0.8 < valid.mean() < 1.0
        err = np.abs(b.depth[valid] - a.depth[valid])
        assert 0.0 < np.median(err) < 0.03
        assert not np.array_equal(np.asarray(a.color), np.asarray(b.color))
    va, vb = read_ply_vertices(tmp_path / "exact" / "scene.ply"), read_ply_vertices(tmp_path / "noisy" / "scene.ply")
    assert all(np.array_equal(va[k], vb[k]) for k in va)


def test_dataset_refuses_to_reuse_scenes_written_with_other_settings(tmp_path):
    kw = {"n_frames": 2, "width": 32, "height": 24, "density": 200.0}
    generate_dataset(tmp_path, [1], **kw)
    generate_dataset(tmp_path, [1], **kw)  # same settings: kept
    with pytest.raises(ValueError, match=r"scene_0001.*sensor_noise: False -> True"):
        generate_dataset(tmp_path, [1], sensor_noise=True, **kw)
    with pytest.raises(ValueError, match=r"n_frames: 2 -> 3"):
        generate_dataset(tmp_path, [1], **{**kw, "n_frames": 3})
    assert len(Scene(tmp_path / "scene_0001")) == 2  # nothing was overwritten


@pytest.mark.parametrize("key, value", [("n_frames", "abc"), ("width", 1), ("density", 0), ("cloud", "mesh"),
                                        ("sensor_noise", "no"), ("n_frames", 2.5)])
def test_bad_scene_settings_are_one_error_naming_the_setting_before_anything_is_written(tmp_path, key, value):
    kw = {"n_frames": 2, "width": 32, "height": 24, "density": 200.0, key: value}
    with pytest.raises(ValueError, match=rf"setting {key} must be .*{value!r}"):
        generate_dataset(tmp_path / "scenes", [1], workers=2, **kw)
    assert not (tmp_path / "scenes").exists()


def test_demo_reports_a_bad_synthetic_setting_as_one_error_line(tmp_path, capsys):
    from pgov3d_ros.demo import main as demo_main

    assert demo_main(["--quick", "--out", str(tmp_path / "demo"), "data.synthetic.n_frames=abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: synthetic scene setting n_frames must be an integer >= 1, got 'abc'"
