"""Synthetic room generator: determinism, geometric and label consistency of frames and the
scene cloud, exact ray/primitive intersection, the on-disk scene, dataset resumption and the CLI.

Small resolutions (80x60 and below) keep the file fast; the numeric criteria do not depend on
resolution (they compare exact geometry)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from pgov3d_core.data import Frame, Scene
from pgov3d_core.data import synthetic as syn
from pgov3d_core.data.scene import read_image, read_ply_vertices
from pgov3d_core.data.synthetic import (
    CLASS_ID,
    CLASS_NAMES,
    OBJECT_CLASSES,
    Box,
    Cylinder,
    SyntheticRoom,
    default_intrinsics,
    generate_dataset,
    generate_scene,
    intersect_room,
    look_pose,
)
from pgov3d_core.geometry import backproject, check_rigid, project

SEED = 3  # a small room (4.3 x 4.9 m): its dense cloud stays small
W, H = 80, 60
N_FRAMES = 6
DENSITY = 5000.0  # 1.4 cm spacing: nearest-neighbour tests resolve sub-centimetre offsets


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return generate_scene(tmp_path_factory.mktemp("syn") / "scene", SEED, n_frames=N_FRAMES, width=W, height=H,
                          density=DENSITY)


@pytest.fixture(scope="module")
def room() -> SyntheticRoom:
    return SyntheticRoom.random(SEED)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tiny_scene(path: Path, seed: int) -> Path:
    return generate_scene(path, seed, n_frames=3, width=40, height=30, density=300.0)


# ------------------------------------------------------------------ 1. determinism


def test_same_seed_gives_byte_identical_scenes_and_other_seed_differs(tmp_path):
    a = all_files(tiny_scene(tmp_path / "a", 7))
    b = all_files(tiny_scene(tmp_path / "b", 7))
    c = all_files(tiny_scene(tmp_path / "c", 8))
    assert {"meta.yaml", "scene.ply", "color/0.png", "depth/0.png", "pose/0.txt", "label/0.png",
            "instance/0.png", "intrinsic/intrinsic_depth.txt"} <= set(a)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    differing = [n for n in a if n in c and a[n] != c[n]]
    assert {"scene.ply", "color/0.png", "depth/0.png", "pose/0.txt"} <= set(differing)


def test_layout_does_not_depend_on_rendering_options():
    r1, r2 = SyntheticRoom.random(11), SyntheticRoom.random(11)
    assert r1.summary() == r2.summary()
    assert all(np.array_equal(p.color, q.color) for p, q in zip(r1.parts, r2.parts, strict=True))
    # A shorter trajectory is a prefix of a longer one with the same step.
    assert np.array_equal(np.stack(r1.trajectory(5, step_deg=10)), np.stack(r1.trajectory(9, step_deg=10))[:5])


# ------------------------------------------------------------------ 2./3. consistency


def test_frames_backprojections_agree_with_each_other(room):
    """Frame j back-projected lands on the surface seen by frame i (rendered finely so its points
    sample the surface densely): median distance ≤ 1 cm over the overlap."""
    poses = room.trajectory(N_FRAMES)
    Ki, Kj = default_intrinsics(320, 240), default_intrinsics(W, H)
    ri = room.render(Ki, poses[0], 320, 240)
    pts_i, _ = backproject(ri.depth, Ki, poses[0])
    tree = cKDTree(pts_i.numpy())
    for j in (1, 3):
        rj = room.render(Kj, poses[j], W, H)
        pts_j, _ = backproject(rj.depth, Kj, poses[j])
        u, v, z, inside = project(pts_j, Ki, poses[0], 240, 320)
        ui = np.clip(np.round(u.numpy()).astype(int), 0, 319)
        vi = np.clip(np.round(v.numpy()).astype(int), 0, 239)
        visible = inside.numpy() & (np.abs(z.numpy() - ri.depth[vi, ui]) < 0.05)
        assert visible.mean() > 0.3, f"frames 0 and {j} should overlap substantially"
        dist, _ = tree.query(pts_j.numpy()[visible])
        assert np.median(dist) <= 0.01


def test_scene_frames_agree_with_scene_cloud_geometry_labels_and_colour(scene_dir):
    """Every frame read back from disk (mm depth PNG, 9-digit pose text): back-projected pixels lie
    on the cloud surface (median ≤ 1 cm, and no pixel sees a surface the cloud lacks), the
    nearest cloud point has the pixel's class for ≥ 99% of pixels and nearly its colour."""
    scene = Scene(scene_dir)
    cloud = scene.cloud()
    assert cloud is not None and len(cloud.xyz) > 50_000  # what 6 frames observe of the dense sample
    tree = cKDTree(cloud.xyz)
    spacing = 1.0 / math.sqrt(DENSITY)
    for frame in scene:
        pts, idx = backproject(frame.depth, frame.K, frame.pose)
        dist, nn = tree.query(pts.numpy())
        idx = idx.numpy()
        assert np.median(dist) <= 0.01
        assert np.quantile(dist, 0.999) < 2 * spacing
        agree = cloud.labels[nn] == frame.labels.reshape(-1)[idx]
        assert agree.mean() >= 0.99, f"frame {frame.frame_id}: {agree.mean():.4f}"
        colour_err = np.abs(cloud.rgb[nn].astype(int) - frame.color.reshape(-1, 3)[idx].astype(int))
        assert np.median(colour_err) <= 6


def test_cloud_points_lie_inside_room_and_carry_instances(scene_dir, room):
    cloud = Scene(scene_dir).cloud()
    eps = 1e-5
    assert np.all(cloud.xyz >= -eps) and np.all(cloud.xyz <= room.size.astype(np.float32) + eps)
    assert set(np.unique(cloud.labels)) <= set(range(len(CLASS_NAMES)))
    inst = read_ply_vertices(scene_dir / "scene.ply")["instance"]
    table = Scene(scene_dir).meta.extra["instance_classes"]
    assert set(np.unique(inst).tolist()) <= set(table)  # an object no frame sees has no cloud points
    names = np.array([table[int(i)] for i in inst])
    assert np.array_equal(names, np.array(CLASS_NAMES)[cloud.labels])
    # Hidden faces are skipped: no object points on the floor plane (undersides of things standing
    # on it) or on the walls (backs of things hung on them).
    objects = cloud.labels > CLASS_ID["ceiling"]
    assert not np.any(objects & (cloud.xyz[:, 2] < 1e-3))
    on_wall = np.any((cloud.xyz[:, :2] < 1e-3) | (cloud.xyz[:, :2] > room.size[:2].astype(np.float32) - 1e-3), 1)
    assert not np.any(objects & on_wall)


def _depth_match(points: np.ndarray, scene: Scene, tol: float = 0.03) -> np.ndarray:
    """Points some frame's depth image shows (inside the image, depth at the pixel within tol)."""
    hit = np.zeros(len(points), dtype=bool)
    for frame in scene:
        u, v, z, inside = project(torch.from_numpy(points.astype(np.float32)), frame.K, frame.pose, *frame.depth.shape)
        u, v, z, inside = u.numpy(), v.numpy(), z.numpy(), inside.numpy()
        ui = np.clip(np.round(u).astype(int), 0, frame.depth.shape[1] - 1)
        vi = np.clip(np.round(v).astype(int), 0, frame.depth.shape[0] - 1)
        hit |= inside & (np.abs(frame.depth[vi, ui] - z) < tol)
    return hit


def test_scene_cloud_holds_what_the_frames_observe_like_a_scan(scene_dir, room):
    """scene.ply is the room's surface sample restricted to what at least one frame sees (a real
    scan's cloud is reconstructed from its frames): exactly the observed_mask subset of
    cloud='all'; independently of ray casting, the frames' depth images show nearly every kept
    point and nearly none of the dropped ones (the ceiling above the camera's pitch range)."""
    scene = Scene(scene_dir)
    cloud = scene.cloud()
    everything = room.sample_points(DENSITY)
    keep = room.observed_mask(everything.xyz, default_intrinsics(W, H), room.trajectory(N_FRAMES), W, H)
    assert 0.1 < keep.mean() < 0.9
    assert np.array_equal(cloud.xyz, everything.xyz[keep].astype(np.float32))
    assert np.array_equal(cloud.labels, everything.labels[keep])
    syn_meta = scene.meta.extra["synthetic"]
    assert syn_meta["cloud"] == "observed" and syn_meta["surface_points"] == len(everything.xyz)
    rng = np.random.default_rng(0)
    kept = rng.choice(np.flatnonzero(keep), 20000, replace=False)
    dropped = rng.choice(np.flatnonzero(~keep), 20000, replace=False)
    assert _depth_match(everything.xyz[kept], scene).mean() > 0.9  # misses: pixel-sized edges, grazing views
    assert _depth_match(everything.xyz[dropped], scene).mean() < 0.03
    ceiling = everything.labels == CLASS_ID["ceiling"]
    assert keep[ceiling].mean() < 0.5 * keep[~ceiling].mean()


def test_cloud_all_keeps_every_surface(tmp_path):
    path = generate_scene(tmp_path / "all", 2, n_frames=2, width=40, height=30, density=300.0, cloud="all")
    room = SyntheticRoom.random(2)
    assert len(Scene(path).cloud().xyz) == len(room.sample_points(300.0).xyz)
    with pytest.raises(ValueError, match="cloud"):
        generate_scene(tmp_path / "bad", 2, n_frames=1, width=40, height=30, density=300.0, cloud="seen")


# ------------------------------------------------------------------ 4. content and the scene folder


def test_class_list_and_per_frame_content(scene_dir, room):
    assert len(OBJECT_CLASSES) >= 12 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    for name in ("wall", "floor", "ceiling", "chair", "table", "sofa", "bed", "cabinet", "bookshelf", "desk",
                 "door", "window", "toilet", "sink", "bathtub"):
        assert name in CLASS_NAMES
    scene = Scene(scene_dir)
    assert scene.class_names == list(CLASS_NAMES)
    assert len(scene) == N_FRAMES
    poses = room.trajectory(N_FRAMES)
    for i, frame in enumerate(scene):
        assert isinstance(frame, Frame) and frame.validate() is frame
        assert frame.color.shape == (H, W, 3) and frame.labels.shape == (H, W)
        classes = set(np.unique(frame.labels).tolist())
        assert len(classes) >= 3 and classes & {CLASS_ID[c] for c in OBJECT_CLASSES}, classes
        assert not np.isnan(frame.depth).any()
        assert frame.depth.min() >= 0.1 and frame.depth.max() <= 12.0
        assert np.allclose(frame.pose, poses[i], atol=1e-8)
        # What was written is exactly what the generator renders.
        r = room.render(scene.K_depth, poses[i], W, H)
        assert np.array_equal(frame.labels, r.class_ids)
        assert np.array_equal(frame.color, r.rgb)
        assert np.abs(frame.depth - r.depth).max() <= 0.0005 + 1e-6
        inst = read_image(scene_dir / "instance" / f"{frame.frame_id}.png")
        assert inst.dtype == np.uint16 and np.array_equal(inst, r.instance_ids)
    table = scene.meta.extra["instance_classes"]
    assert table == room.instance_classes and table[1] == "wall" and table[5] == "floor"
    assert scene.meta.extra["synthetic"]["seed"] == SEED


def test_every_object_class_appears_across_a_dozen_seeds():
    seen = set()
    for seed in range(12):
        room = SyntheticRoom.random(seed)
        seen |= {o.class_name for o in room.objects}
        assert len(room.objects) >= 8
        assert 4.0 <= room.size[0] <= 8.0 and 4.0 <= room.size[1] <= 8.0 and 2.5 <= room.size[2] <= 3.0
    assert seen == set(OBJECT_CLASSES)


def test_trajectory_is_rigid_smooth_and_clear_of_furniture(room):
    poses = room.trajectory(30)
    assert len(poses) == 30
    for pose in poses:
        check_rigid(pose, tol=1e-9)
        assert 1.2 <= pose[2, 3] <= 1.6
        forward = pose[:3, 2]
        assert -0.5 < forward[2] < 0.0  # mild downward pitch
        for part in room.parts[6:]:
            assert not part.shape.contains(pose[None, :3, 3], 0.2)[0]
    for a, b in zip(poses[:-1], poses[1:], strict=True):
        rel = np.linalg.inv(a) @ b
        angle = math.degrees(math.acos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
        assert angle < 25 and np.linalg.norm(rel[:3, 3]) < 0.5


def test_culled_render_equals_brute_force_cast(room):
    K = default_intrinsics(64, 48)
    pose = room.trajectory(N_FRAMES)[2]
    r = room.render(K, pose, 64, 48)
    origin, dirs = syn.pixel_rays(K, pose, 64, 48)
    t, part, _ = room.cast(origin, dirs)  # every part against every ray
    assert np.array_equal(r.depth, t.astype(np.float32))
    assert np.array_equal(r.class_ids, room._class[part])


# ------------------------------------------------------------------ 5. intersection


def test_box_face_hits():
    box = Box(center=(0.0, 0.0, 5.0), half=(1.0, 1.0, 1.0))
    dirs = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 1.0]])
    t, n = box.intersect(np.zeros(3), dirs)
    assert t[0] == pytest.approx(4.0) and np.allclose(n[0], [0, 0, -1])
    assert t[1] == pytest.approx(4.0)  # hits z = 4 at x = 0.4, inside the face
    assert np.isinf(t[2])  # pointing away
    assert np.isinf(t[3])  # passes beside the box (x = t, z = t never within both slabs)
    # Rotated 45° about z: entering through the local +y face at x = 5.3 - √2.
    rot = Box(center=(5.0, 0.0, 0.0), half=(1.0, 1.0, 1.0), yaw=math.pi / 4)
    t, n = rot.intersect(np.array([0.0, 0.3, 0.0]), np.array([[1.0, 0.0, 0.0]]))
    assert t[0] == pytest.approx(5.3 - math.sqrt(2)) and np.allclose(n[0], [-math.sqrt(0.5), math.sqrt(0.5), 0])
    # From inside, the far face is hit (normal still against the ray).
    t, n = box.intersect(np.array([0.0, 0.0, 5.0]), np.array([[0.0, 2.0, 0.0]]))
    assert t[0] == pytest.approx(0.5) and np.allclose(n[0], [0, -1, 0])


def test_cylinder_side_and_cap_hits():
    cyl = Cylinder(center=(2.0, 0.0), radius=0.5, z0=0.0, z1=1.0)
    t, n = cyl.intersect(np.array([0.0, 0.0, 0.5]), np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.4]]))
    assert t[0] == pytest.approx(1.5) and np.allclose(n[0], [-1, 0, 0])  # side
    assert np.isinf(t[1])  # reaches x = 1.5 at z = 1.1, above the top, and crosses z = 1 outside the disc
    t, n = cyl.intersect(np.array([2.0, 0.3, 3.0]), np.array([[0.0, 0.0, -1.0]]))
    assert t[0] == pytest.approx(2.0) and np.allclose(n[0], [0, 0, 1])  # top cap
    # Crosses the side above z1 (z = 1.125 at x = 1.5), so the top cap at (2, 0, 1) is the hit.
    t, n = cyl.intersect(np.array([0.0, 0.0, 1.5]), np.array([[2.0, 0.0, -0.5]]))
    assert t[0] == pytest.approx(1.0) and np.allclose(n[0], [0, 0, 1])
    t, n = cyl.intersect(np.array([0.0, 0.0, -1.0]), np.array([[2.0, 0.0, 1.0]]))
    assert t[0] == pytest.approx(1.0) and np.allclose(n[0], [0, 0, -1])  # bottom cap
    t, _ = cyl.intersect(np.array([0.0, 0.0, 2.0]), np.array([[1.0, 0.0, 0.0]]))
    assert np.isinf(t[0])  # passes above


def test_depth_is_z_depth_not_ray_length():
    """An empty 4 x 4 x 3 room, camera at (1, 2, 1.5) looking along +x: the whole image sees the
    x = 4 wall 3 m ahead, so every pixel's depth is 3 while the ray length grows off-centre."""
    room = SyntheticRoom(size=(4.0, 4.0, 3.0))
    K = default_intrinsics(40, 30)
    pose = look_pose([1.0, 2.0, 1.5], yaw=0.0, pitch=0.0)
    r = room.render(K, pose, 40, 30)
    assert np.allclose(r.depth, 3.0, atol=1e-6)
    assert np.all(r.class_ids == CLASS_ID["wall"]) and np.all(r.instance_ids == 2)  # face 1: x = Lx
    pts, idx = backproject(r.depth, K, pose)
    assert np.allclose(pts[:, 0].numpy(), 4.0, atol=1e-5)
    corner = pts[idx == 0][0].numpy()  # pixel (u, v) = (0, 0)
    ray_length = np.linalg.norm(corner - pose[:3, 3])
    expected = 3.0 * np.linalg.norm(np.linalg.inv(K) @ [0.0, 0.0, 1.0])
    assert ray_length == pytest.approx(expected, rel=1e-5) and ray_length > 3.3
    # Looking down at the floor from 1.5 m: the centre pixel's depth is the distance along the axis.
    t, face, n = intersect_room(np.array([1.0, 2.0, 1.5]), np.array([[0.0, 0.0, -1.0]]), room.size)
    assert t[0] == pytest.approx(1.5) and face[0] == 4 and np.allclose(n[0], [0, 0, 1])


# ------------------------------------------------------------------ dataset and CLI


def test_generate_dataset_is_resumable(tmp_path, monkeypatch):
    kwargs = {"n_frames": 2, "width": 32, "height": 24, "density": 200.0}
    calls = []
    paths = generate_dataset(tmp_path, [5, 6], on_scene=lambda p, g: calls.append((p.name, g)), **kwargs)
    assert [p.name for p in paths] == ["scene_0005", "scene_0006"]
    assert calls == [("scene_0005", True), ("scene_0006", True)]
    assert all(len(Scene(p)) == 2 for p in paths)
    before = (paths[0] / "meta.yaml").stat().st_mtime_ns

    calls.clear()
    (paths[1] / "meta.yaml").unlink()  # incomplete: regenerated
    (tmp_path / ".scene_0006.x.partial").mkdir()  # leftover of an interrupted run: removed
    generate_dataset(tmp_path, [5, 6], on_scene=lambda p, g: calls.append((p.name, g)), **kwargs)
    assert calls == [("scene_0005", False), ("scene_0006", True)]
    assert (paths[0] / "meta.yaml").stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".*partial"))

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(syn.output, "generate_scene", interrupted)  # where generate_dataset finds it
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, [9], **kwargs)
    assert not (tmp_path / "scene_0009").exists() and not list(tmp_path.glob(".*partial"))


def test_generate_dataset_with_worker_processes_writes_the_same_files(tmp_path):
    """workers > 1 writes scenes in parallel processes: byte-identical files, callbacks in seed
    order, complete scenes kept."""
    kwargs = {"n_frames": 2, "width": 32, "height": 24, "density": 200.0}
    one = generate_dataset(tmp_path / "one", [3, 4, 5], **kwargs)
    generate_dataset(tmp_path / "two", [4], **kwargs)
    kept = (tmp_path / "two" / "scene_0004" / "meta.yaml").stat().st_mtime_ns
    calls = []
    two = generate_dataset(tmp_path / "two", [3, 4, 5], on_scene=lambda p, g: calls.append((p.name, g)),
                           workers=2, **kwargs)
    assert calls == [("scene_0003", True), ("scene_0004", False), ("scene_0005", True)]
    assert (tmp_path / "two" / "scene_0004" / "meta.yaml").stat().st_mtime_ns == kept
    for a, b in zip(one, two, strict=True):
        files = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
        assert files == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_generate_scene_refuses_to_overwrite_by_default(tmp_path):
    tiny_scene(tmp_path / "s", 1)
    with pytest.raises(FileExistsError):
        tiny_scene(tmp_path / "s", 1)
    generate_scene(tmp_path / "s", 2, n_frames=1, width=40, height=30, density=300.0, overwrite=True)
    assert len(Scene(tmp_path / "s")) == 1  # stale frames of the first scene are gone


def test_cli_writes_a_scene(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "pgov3d_core.data.synthetic", "--out", str(out), "--seed", "1", "--frames", "2",
           "--width", "32", "--height", "24", "--density", "200"]
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=120)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and "2 frames 32x24" in res.stdout
    scene = Scene(out)
    assert len(scene) == 2 and scene.has_labels and scene.cloud() is not None
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=120)
    assert again.returncode == 2 and "overwrite" in again.stderr
    helptext = subprocess.run([sys.executable, "-m", "pgov3d_core.data.synthetic", "--help"], capture_output=True,
                              text=True, cwd=root, timeout=120).stdout
    for option in ("--out", "--seed", "--frames", "--width", "--height", "--density", "--color-format", "--scenes",
                   "--overwrite"):
        assert option in helptext
