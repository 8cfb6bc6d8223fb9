"""VoxelMap and check_scene on rendered synthetic rooms."""

import numpy as np
import pytest
import torch

from pgov3d_core.data.synthetic import SyntheticRoom, default_intrinsics, generate_scene
from pgov3d_core.geometry import pack_keys, project, voxel_coords
from pgov3d_core.map import VoxelMap
from pgov3d_core.tools.check_scene import check_scene
from pgov3d_core.tools.check_scene import main as check_scene_main


@pytest.fixture(scope="module")
def room_frames():
    room = SyntheticRoom.random(3)
    frames = [f for f, _ in room.render_frames(8, 640, 480)]
    return room, frames


def test_map_covers_the_visible_scene_with_matching_colours(room_frames):
    room, frames = room_frames
    vmap = VoxelMap(voxel_size=0.02)
    for f in frames:
        vmap.integrate(f)
    cloud = room.sample_cloud(density=10000.0)
    xyz = torch.from_numpy(cloud.xyz)
    visible = torch.zeros(len(xyz), dtype=torch.bool)
    for f in frames:  # cloud points that some frame sees (in view, not occluded)
        u, v, z, inside = project(xyz, f.K, f.pose, f.height, f.width)
        ui, vi = u.round().long().clamp(0, f.width - 1), v.round().long().clamp(0, f.height - 1)
        d = torch.from_numpy(f.depth)[vi, ui]
        visible |= inside & ((d - z).abs() < 0.01)
    keys = pack_keys(voxel_coords(xyz[visible], 0.02))
    vis_keys, inverse = torch.unique(keys, return_inverse=True)
    present = torch.isin(vis_keys, vmap.keys())
    coverage = float(present.float().mean())
    assert coverage >= 0.95, coverage
    # Colour: map voxel mean vs the mean colour of the cloud points in the same voxel.
    vis_rgb = torch.from_numpy(cloud.rgb[visible.numpy()]).float()
    cloud_rgb = torch.zeros(len(vis_keys), 3).index_add_(0, inverse, vis_rgb)
    cloud_rgb /= torch.bincount(inverse, minlength=len(vis_keys))[:, None]
    order = torch.argsort(vmap.keys())
    pos = torch.searchsorted(vmap.keys()[order], vis_keys[present])
    map_rgb = vmap.colors()[order][pos].float()
    diff = (map_rgb - cloud_rgb[present]).abs().mean(dim=1)
    assert float(diff.median()) < 8.0, float(diff.median())


def test_check_scene_detects_pose_convention_and_depth_scale(tmp_path, capsys):
    scene = generate_scene(tmp_path / "room", seed=1, n_frames=6, width=96, height=72)
    good = check_scene(scene)
    assert good.likely_convention == "camera-to-world" and not good.warnings
    assert good.frames == 6 and good.overlap_cam_to_world > 0.5 > good.overlap_world_to_cam
    assert 0.5 < good.depth_median_m < 8.0
    K = default_intrinsics(96, 72)
    assert np.allclose(good.K_depth, K, atol=1e-3)
    # Millimetre depth read as if in tenths of a metre: 100x too far, flagged.
    wrong_scale = check_scene(scene, depth_scale=10.0)
    assert wrong_scale.diagnosis == "depth scale" and wrong_scale.suggested_depth_scale == 1000.0
    # Poses stored world-to-camera: the tool says so.
    for pose_file in (scene / "pose").glob("*.txt"):
        np.savetxt(pose_file, np.linalg.inv(np.loadtxt(pose_file)))
    flipped = check_scene(scene)
    assert flipped.likely_convention == "world-to-camera"
    assert any("invert" in w for w in flipped.warnings)
    assert check_scene_main([str(scene), "--png", str(tmp_path / "top.png")]) == 1
    out = capsys.readouterr().out
    assert "world-to-camera" in out and (tmp_path / "top.png").stat().st_size > 0


def test_check_scene_reports_a_broken_folder(tmp_path, capsys):
    (tmp_path / "color").mkdir()
    assert check_scene_main([str(tmp_path)]) == 2
    assert "missing folder" in capsys.readouterr().err
