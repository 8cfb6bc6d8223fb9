"""check_scene names the actual cause of a broken scene (depth scale, pose convention,
intrinsics of another resolution, frames that share nothing), on variants of one rendered room
that each test writes itself, and does not invent a problem in a correct scene."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pgov3d_core.data.synthetic import generate_scene
from pgov3d_core.tools.check_scene import check_scene
from pgov3d_core.tools.check_scene import main as check_scene_main


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("check") / "room", seed=2, n_frames=8, width=128, height=96)


@pytest.fixture
def variant(room, tmp_path):
    def make(name="variant"):
        return shutil.copytree(room, tmp_path / name)
    return make


def _invert_poses(scene):
    for pose_file in (scene / "pose").glob("*.txt"):
        np.savetxt(pose_file, np.linalg.inv(np.loadtxt(pose_file)))


def test_a_correct_scene_is_ok(room):
    report = check_scene(room)
    assert report.diagnosis == "ok" and report.warnings == [] and report.suggested_depth_scale is None
    assert report.likely_convention == "camera-to-world"
    assert report.overlap_cam_to_world > 0.5 > report.overlap_world_to_cam
    assert report.hypotheses[0].depth_scale == 1000.0 and report.hypotheses[0].convention == "camera-to-world"


@pytest.mark.parametrize("told_scale", [10000.0, 100.0, 10.0])
def test_depth_off_by_a_factor_is_diagnosed_as_depth_scale_not_pose_convention(room, told_scale):
    report = check_scene(room, depth_scale=told_scale)  # millimetre PNGs read with the wrong scale
    assert report.diagnosis == "depth scale", report.warnings
    assert report.suggested_depth_scale == 1000.0
    assert report.likely_convention == "camera-to-world"
    assert not any("invert" in w for w in report.warnings)
    assert any("depth_scale 1000 instead of" in w for w in report.warnings)


def test_tum_scaled_depth_read_as_millimetres_suggests_5000(variant):
    scene = variant()
    for png in (scene / "depth").glob("*.png"):
        mm = np.asarray(Image.open(png)).astype(np.uint32)
        Image.fromarray(np.minimum(mm * 5, 65535).astype(np.uint16)).save(png)  # TUM: 5000 units per metre
    report = check_scene(scene)
    assert report.diagnosis == "depth scale" and report.suggested_depth_scale == 5000.0, report.warnings


def test_world_to_camera_poses_are_diagnosed_as_the_pose_convention(variant):
    scene = variant()
    _invert_poses(scene)
    report = check_scene(scene)
    assert report.diagnosis == "pose convention", report.warnings
    assert report.likely_convention == "world-to-camera" and report.suggested_depth_scale is None
    assert any("invert" in w for w in report.warnings)


def test_both_wrong_names_both(variant):
    scene = variant()
    _invert_poses(scene)
    report = check_scene(scene, depth_scale=10000.0)
    assert report.diagnosis == "depth scale + pose convention", report.warnings
    assert report.suggested_depth_scale == 1000.0


def test_intrinsics_of_another_resolution_are_diagnosed(variant):
    scene = variant()
    path = scene / "intrinsic" / "intrinsic_depth.txt"
    K = np.loadtxt(path)
    K[:2] *= 2.0  # the calibration of the 256x192 stream used for 128x96 depth
    np.savetxt(path, K)
    report = check_scene(scene)
    assert report.diagnosis == "intrinsics", report.warnings
    assert report.suggested_depth_scale is None
    assert any("rescaled from 256x192" in w for w in report.warnings)


def test_frames_that_share_nothing_say_so_instead_of_guessing(variant):
    scene = variant()
    rng = np.random.default_rng(0)
    for k, pose_file in enumerate(sorted((scene / "pose").glob("*.txt"))):
        pose = np.eye(4)
        pose[:3, 3] = [40.0 * k, 0.0, 0.0] + rng.normal(size=3)  # 40 m apart: no shared view
        np.savetxt(pose_file, pose)
    report = check_scene(scene)
    assert report.diagnosis == "frames do not overlap", report.warnings
    assert report.suggested_depth_scale is None and "unknown" in report.likely_convention


def test_cli_prints_the_diagnosis_and_exits_nonzero(room, capsys):
    assert check_scene_main([str(room), "--depth-scale", "10000"]) == 1
    out = capsys.readouterr().out
    assert "diagnosis        depth scale" in out and "depth_scale 1000 instead of 10000" in out
    assert check_scene_main([str(room)]) == 0


SUN3D = Path(__file__).resolve().parents[2] / "shared" / "data" / "sun3d-mit76-studyroom"


@pytest.mark.skipif(not SUN3D.is_dir(), reason=f"real frames not present at {SUN3D}")
def test_real_sun3d_frames_depth_off_by_ten_is_a_depth_scale_problem(tmp_path):
    from pgov3d_core.data.readers.threedmatch import convert_threedmatch

    scene = convert_threedmatch(SUN3D, tmp_path / "sun3d")
    assert check_scene(scene).diagnosis == "ok"
    for told in (100.0, 10000.0):
        report = check_scene(scene, depth_scale=told)
        assert (report.diagnosis, report.suggested_depth_scale) == ("depth scale", 1000.0), report.warnings
    _invert_poses(scene)
    assert check_scene(scene).diagnosis == "pose convention"
