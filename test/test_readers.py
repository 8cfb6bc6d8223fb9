"""Dataset readers: each writes a tiny fixture in the dataset's own layout and checks units and
conventions numerically (depth scale, quaternion order, camera-to-world direction, label maps),
bad input (SceneError naming the file), and, when present, the real sample data in shared/data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pgov3d_core.data import label_sets as ls
from pgov3d_core.data.readers import (
    associate,
    convert_redwood,
    convert_s3dis_room,
    convert_threedmatch,
    convert_tum,
    iter_threedmatch_frames,
    iter_tum_frames,
    open_scannet_scene,
    read_log_trajectory,
    read_open3d_intrinsics,
    read_s3dis_room,
    read_scannet_cloud,
    read_timestamps,
    tum_pose,
)
from pgov3d_core.data.readers.redwood import list_redwood_frames, read_redwood_frame, write_log_trajectory
from pgov3d_core.data.readers.tum import TUM_INTRINSICS, tum_intrinsics
from pgov3d_core.data.scene import Scene, SceneError, read_ply_cloud, read_ply_vertices
from pgov3d_core.geometry import backproject

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

W, H = 8, 6
FX, FY, CX, CY = 10.0, 12.0, 3.0, 2.0
K3 = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
# 90° about +x: camera z (forward) → world -y, camera y (down) → world +z.
RX90 = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def pose(R=RX90, t=(1.0, 2.0, 3.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_matrix(path: Path, m) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(m))
    return path


def rgb_image(w=W, h=H, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def depth_image(value: int, w=W, h=H) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint16)


def world_point(frame, u: int, v: int) -> np.ndarray:
    """Back-project pixel (u, v) of a frame with the project's geometry (camera-to-world pose)."""
    pts, idx = backproject(frame.depth, frame.K, frame.pose)
    return pts.numpy()[list(idx.numpy()).index(v * frame.width + u)]


def expected_world(T: np.ndarray, u: int, v: int, z: float) -> np.ndarray:
    cam = np.array([(u - CX) / FX * z, (v - CY) / FY * z, z])
    return T[:3, :3] @ cam + T[:3, 3]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# =========================================================================== label sets


def test_scannet20_nyu40_mapping():
    assert len(ls.VALID_CLASS_IDS) == len(ls.CLASS_LABELS_20) == 20
    nyu = np.array([0, 1, 2, 3, 5, 13, 14, 24, 33, 36, 39, 40, 41, 1000, -5])
    want = np.array([-1, 0, 1, 2, 4, -1, 12, 14, 16, 18, 19, -1, -1, -1, -1])
    np.testing.assert_array_equal(ls.nyu40_to_scannet20(nyu), want)
    assert ls.CLASS_LABELS_20[ls.nyu40_to_scannet20(14)] == "desk"
    assert ls.CLASS_LABELS_20[ls.nyu40_to_scannet20(24)] == "refrigerator"
    assert ls.nyu40_to_scannet20(nyu).dtype == np.int32


def test_scannet19_drops_otherfurniture():
    s19 = ls.get_label_set("scannet19")
    assert len(s19) == 19 and "otherfurniture" not in s19.class_names
    np.testing.assert_array_equal(ls.nyu40_to_scannet19([1, 36, 39]), [0, 18, -1])
    assert s19.class_names == ls.CLASS_LABELS_20[:19]


def test_scannet200_constants():
    s200 = ls.get_label_set("ScanNet200")
    assert len(ls.VALID_CLASS_IDS_200) == len(ls.CLASS_LABELS_200) == len(s200) == 200
    assert len(set(ls.VALID_CLASS_IDS_200)) == 200 and len(set(ls.CLASS_LABELS_200)) == 200
    assert list(ls.VALID_CLASS_IDS_200) == sorted(ls.VALID_CLASS_IDS_200)
    by_id = dict(zip(ls.VALID_CLASS_IDS_200, ls.CLASS_LABELS_200, strict=True))
    assert (by_id[1], by_id[2], by_id[3], by_id[4]) == ("wall", "chair", "floor", "table")
    assert by_id[13] == "pillow" and by_id[1191] == "mattress"
    assert 12 not in by_id and 20 not in by_id and 1177 not in by_id
    np.testing.assert_array_equal(s200.map_ids([1, 2, 3, 12, 1191, 0]), [0, 1, 2, -1, 199, -1])
    with pytest.raises(ValueError, match="nyu40"):
        s200.map_ids([1], id_space="nyu40")


def test_s3dis_and_lookup():
    s = ls.get_label_set("s3dis")
    assert s.class_names == ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair",
                             "sofa", "bookcase", "board", "clutter")
    assert ls.get_label_set(s) is s
    with pytest.raises(ValueError, match="unknown label set"):
        ls.get_label_set("coco")


# =========================================================================== ScanNet


def make_scannet_scene(root: Path) -> Path:
    """SensReader layout: colour 16x12 (jpg), depth 8x6 mm, 4x4 intrinsics, pose 1 = -inf."""
    (root / "color").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rgb_image(16, 12, i)).save(root / "color" / f"{i}.jpg", quality=95)
        save_png(root / "depth" / f"{i}.png", depth_image(1500 + 100 * i))
    save_matrix(root / "pose" / "0.txt", pose())
    (root / "pose" / "1.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    save_matrix(root / "pose" / "2.txt", np.eye(4))
    K4 = np.eye(4)
    K4[:3, :3] = K3
    save_matrix(root / "intrinsic" / "intrinsic_depth.txt", K4)
    K4c = K4.copy()
    K4c[:2] *= 2
    K4c[2, 2] = 1
    save_matrix(root / "intrinsic" / "intrinsic_color.txt", K4c)
    # Label image at colour resolution, constant 2x2 blocks so nearest downsampling is exact.
    small = np.array([[0, 1, 39, 13, 40, 5, 14, 1]] * H, dtype=np.uint16)
    save_png(root / "label-filt" / "0.png", np.kron(small, np.ones((2, 2), np.uint16)).astype(np.uint16))
    return root


def test_scannet_reads_in_place_and_skips_invalid_poses(tmp_path, caplog):
    root = make_scannet_scene(tmp_path / "scene0000_00")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with caplog.at_level(logging.WARNING):
        scene = open_scannet_scene(root)
    assert scene.frame_ids == ["0", "2"] and len(scene) == 2
    assert "1" in scene.skipped and "inf" in scene.skipped["1"]
    assert any("invalid" in r.message and "1 of 3" in r.message for r in caplog.records)
    assert scene.class_names == list(ls.CLASS_LABELS_20) and scene.has_labels

    f0 = scene[0]
    assert f0.color.shape == (H, W, 3) and f0.depth.shape == (H, W)
    assert f0.depth[0, 0] == np.float32(1.5)  # 1500 mm
    np.testing.assert_allclose(f0.K, K3)
    # Camera-to-world: the centre pixel 1.5 m ahead lands 1.5 m along world -y from t.
    np.testing.assert_allclose(world_point(f0, 3, 2), [1.0, 0.5, 3.0], atol=1e-5)
    np.testing.assert_allclose(world_point(f0, 5, 4), expected_world(pose(), 5, 4, 1.5), atol=1e-5)
    # NYU40 → ScanNet20 per column: 0→-1, 1→0, 39→19, 13→-1, 40→-1, 5→4, 14→12, 1→0.
    np.testing.assert_array_equal(f0.labels[0], [-1, 0, 19, -1, -1, 4, 12, 0])
    assert scene[1].labels is None and scene[1].depth[0, 0] == np.float32(1.7)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # wrote nothing

    s19 = open_scannet_scene(root, "scannet19")
    np.testing.assert_array_equal(s19[0].labels[0], [-1, 0, -1, -1, -1, 4, 12, 0])
    with pytest.raises(ValueError, match="scannet200"):
        open_scannet_scene(root, "scannet200")  # label-filt holds NYU40 ids by default
    raw = open_scannet_scene(root, "scannet200", label_id_space="scannet")[0].labels[0]  # raw ScanNet ids
    assert [ls.CLASS_LABELS_200[i] if i >= 0 else None for i in raw[[0, 1, 5]]] == [None, "wall", "door"]


def test_scannet_bad_inputs(tmp_path):
    root = make_scannet_scene(tmp_path / "scene0000_00")
    (root / "pose" / "2.txt").write_text("1 0 0\n0 1 zero\n")
    with pytest.raises(SceneError, match=r"pose/2\.txt"):
        open_scannet_scene(root)
    save_matrix(root / "pose" / "2.txt", pose(R=RX90 * 2))
    with pytest.raises(SceneError, match=r"2\.txt.*orthonormal"):
        open_scannet_scene(root)
    for i in (0, 2):
        (root / "pose" / f"{i}.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    with pytest.raises(SceneError, match="no frame has a valid pose"):
        open_scannet_scene(root)
    save_matrix(root / "pose" / "0.txt", pose())
    truncate(root / "depth" / "0.png")
    scene = open_scannet_scene(root)
    with pytest.raises(SceneError, match=r"depth/0\.png"):
        scene[0]


PLY_TYPES = {np.dtype("<f4"): "float", np.dtype("u1"): "uchar", np.dtype("<u2"): "ushort"}


def write_ply(path: Path, fields: dict[str, np.ndarray], faces: np.ndarray, ascii_: bool = False) -> None:
    """A PLY like ScanNet's: vertex element, THEN a face element with a list property."""
    n = len(next(iter(fields.values())))
    header = ["ply", f"format {'ascii' if ascii_ else 'binary_little_endian'} 1.0", f"element vertex {n}"]
    header += [f"property {PLY_TYPES[a.dtype]} {k}" for k, a in fields.items()]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode()
    if ascii_:
        rows = [" ".join(str(a[i]) for a in fields.values()) for i in range(n)]
        rows += ["3 " + " ".join(map(str, f)) for f in faces]
        path.write_bytes(head + ("\n".join(rows) + "\n").encode())
        return
    rec = np.empty(n, dtype=[(k, a.dtype) for k, a in fields.items()])
    for k, a in fields.items():
        rec[k] = a
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"], face_rec["idx"] = 3, faces
    path.write_bytes(head + rec.tobytes() + face_rec.tobytes())


def make_scannet_meshes(root: Path, ascii_: bool = False) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32) + 0.25
    rgb = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]], np.uint8)
    nyu = np.array([1, 39, 13, 0, 5], np.uint16)
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 3, 4]])
    base = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    mesh = {**base, "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2], "alpha": np.full(5, 255, np.uint8)}
    labelled = {**base, "red": rgb[:, 2], "green": rgb[:, 0], "blue": rgb[:, 1], "alpha": mesh["alpha"], "label": nyu}
    write_ply(root / f"{root.name}_vh_clean_2.ply", mesh, faces, ascii_)
    write_ply(root / f"{root.name}_vh_clean_2.labels.ply", labelled, faces, ascii_)
    return {"xyz": xyz, "rgb": rgb}


@pytest.mark.parametrize("ascii_", [False, True])
def test_scannet_cloud_ply_with_faces_after_vertices(tmp_path, ascii_):
    root = tmp_path / "scene0011_01"
    want = make_scannet_meshes(root, ascii_)
    v = read_ply_vertices(root / "scene0011_01_vh_clean_2.labels.ply")
    assert len(v["x"]) == 5 and v["label"].tolist() == [1, 39, 13, 0, 5]
    cloud = read_scannet_cloud(root)
    np.testing.assert_allclose(cloud.xyz, want["xyz"])
    np.testing.assert_array_equal(cloud.rgb, want["rgb"])  # scan colours, not the label file's
    np.testing.assert_array_equal(cloud.labels, [0, 19, -1, -1, 4])
    np.testing.assert_array_equal(read_scannet_cloud(root, "scannet19").labels, [0, -1, -1, -1, 4])
    with pytest.raises(ValueError, match="NYU40"):
        read_scannet_cloud(root, "scannet200")


def test_scannet_cloud_bad_inputs(tmp_path):
    root = tmp_path / "scene0011_01"
    make_scannet_meshes(root)
    (root / "scene0011_01_vh_clean_2.labels.ply").unlink()
    assert (read_scannet_cloud(root).labels == -1).all()  # test-split scenes have no labels
    mesh = root / "scene0011_01_vh_clean_2.ply"
    data = mesh.read_bytes()
    mesh.write_bytes(data[: data.index(b"end_header") + 11 + 30])  # cut inside the vertex block
    with pytest.raises(SceneError, match="scene0011_01_vh_clean_2.ply.*truncated"):
        read_scannet_cloud(root)
    mesh.unlink()
    with pytest.raises(SceneError, match="vh_clean_2.ply: file not found"):
        read_scannet_cloud(root)


# =========================================================================== S3DIS


def make_s3dis_room(root: Path) -> Path:
    ann = root / "Area_1" / "office_1" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "chair_1.txt").write_text("1.0 2.0 3.0 255 0 0\n1.5 2.5 3.5 250 5 5\n")
    (ann / "table_1.txt").write_text("-1.25 0.5 0.75 0 255 0\n")
    (ann / "stairs_1.txt").write_text("4 5 6 1 2 3\n")
    (ann / "ceiling_1.txt").write_text("0 0 3 200 200 200\n")
    (ann / "chair_10.txt").write_text("7 7 7 9 9 9\n")
    (root / "Area_1" / "office_1" / "office_1.txt").write_text("not read\n")
    return root / "Area_1" / "office_1"


def test_s3dis_room_and_conversion(tmp_path):
    room = make_s3dis_room(tmp_path)
    cloud = read_s3dis_room(room)
    # natural order: ceiling_1, chair_1, chair_10, stairs_1, table_1
    names = ls.S3DIS_CLASSES
    assert [names[i] for i in cloud.labels] == ["ceiling", "chair", "chair", "chair", "clutter", "table"]
    np.testing.assert_allclose(cloud.xyz[1], [1, 2, 3])
    np.testing.assert_allclose(cloud.xyz[-1], [-1.25, 0.5, 0.75])
    np.testing.assert_array_equal(cloud.rgb[1], [255, 0, 0])
    assert cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.uint8 and cloud.labels.dtype == np.int32

    out = convert_s3dis_room(room, tmp_path / "out" / "office_1")
    assert sorted(p.name for p in out.iterdir()) == ["meta.yaml", "scene.ply"]
    back = read_ply_cloud(out / "scene.ply")
    np.testing.assert_array_equal(back.labels, cloud.labels)
    np.testing.assert_allclose(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(read_ply_vertices(out / "scene.ply")["instance"], [0, 1, 1, 2, 3, 4])
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert meta["class_names"] == list(names) and meta["source"] == "s3dis" and meta["area"] == "Area_1"
    with pytest.raises(SceneError, match="refusing to overwrite"):
        convert_s3dis_room(room, out)


def test_s3dis_bad_inputs(tmp_path, caplog):
    room = make_s3dis_room(tmp_path)
    bad = room / "Annotations" / "table_1.txt"
    bad.write_text("1 2 3 4 5 6\n1 2 3\x10 4 5 6\n7 8 9 1 1 1\n")
    with pytest.raises(SceneError, match=r"table_1\.txt:2: malformed"):
        read_s3dis_room(room)
    with pytest.raises(SceneError, match=r"table_1\.txt:2"):
        convert_s3dis_room(room, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # all-or-nothing
    with caplog.at_level(logging.WARNING):
        assert len(read_s3dis_room(room, on_bad_line="skip").xyz) == 7
    assert any("table_1.txt:2" in r.getMessage() for r in caplog.records)
    bad.write_text("1 2 3 4 5 600\n")
    with pytest.raises(SceneError, match=r"table_1\.txt: colours"):
        read_s3dis_room(room)
    bad.unlink()
    (room / "Annotations" / "robot_1.txt").write_text("1 2 3 4 5 6\n")
    with pytest.raises(SceneError, match=r"robot_1\.txt: unknown S3DIS class"):
        read_s3dis_room(room)
    with pytest.raises(SceneError, match="Annotations folder not found"):
        read_s3dis_room(tmp_path / "Area_1" / "nowhere")


# =========================================================================== TUM RGB-D


def test_tum_quaternion_order_xyzw():
    s = np.sqrt(0.5)
    T = tum_pose(1, 2, 3, s, 0, 0, s)  # qx = sin 45°, qw = cos 45°: +90° about x
    np.testing.assert_allclose(T[:3, :3], RX90, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    # 60° about the unit axis (0, 0.6, 0.8), against Rodrigues' formula written out by hand.
    axis, ang = np.array([0.0, 0.6, 0.8]), np.pi / 3
    q = (*(axis * np.sin(ang / 2)), np.cos(ang / 2))
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(ang) * Kx + (1 - np.cos(ang)) * Kx @ Kx
    np.testing.assert_allclose(tum_pose(0, 0, 0, *q)[:3, :3], R, atol=1e-12)
    # Reading the same numbers as w x y z would give a different rotation.
    assert not np.allclose(tum_pose(0, 0, 0, q[1], q[2], q[3], q[0])[:3, :3], R, atol=1e-3)
    with pytest.raises(ValueError, match="zero norm"):
        tum_pose(0, 0, 0, 0, 0, 0, 0)


def test_associate_like_tum_script():
    assert associate([1.0, 1.012, 2.0], [1.005, 2.5]) == [(0, 0)]  # one-to-one, closest wins
    assert associate([1.0, 1.03], [1.015, 1.031]) == [(0, 0), (1, 1)]
    assert associate([1.0, 1.01], [1.008]) == [(1, 0)]  # greedy by |Δ|, not by order
    assert associate([1.0], [1.02]) == []  # |Δ| must be < 0.02


def make_tum_sequence(root: Path, name: str = "rgbd_dataset_freiburg1_unit") -> Path:
    seq = root / name
    rgb_t = [1.0, 1.033, 1.066, 1.5]
    depth_t = [1.005, 1.030, 1.070, 2.0]
    header = "# color images\n# file: 'x.bag'\n# timestamp filename\n"
    (seq / "rgb").mkdir(parents=True)
    (seq / "rgb.txt").write_text(header + "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in rgb_t))
    (seq / "depth.txt").write_text(header + "".join(f"{t:.6f} depth/{t:.6f}.png\n" for t in depth_t))
    for k, t in enumerate(rgb_t):
        save_png(seq / "rgb" / f"{t:.6f}.png", rgb_image(seed=k))
    for k, t in enumerate(depth_t):
        d = depth_image(5000 + 1000 * k)
        d[0, 0] = 12345
        d[0, 1] = 0
        save_png(seq / "depth" / f"{t:.6f}.png", d)
    s = np.sqrt(0.5)
    gt = [
        "# ground truth trajectory",
        "# timestamp tx ty tz qx qy qz qw",
        f"0.995 1 2 3 {s} 0 0 {s}",  # for rgb 1.000
        "1.035 0 0 0 0 0 0 1",  # for rgb 1.033
        "1.100 0 0 0 0 0 0 1",  # nearest to rgb 1.066 but 0.034 s away → skipped
        "1.500 0 0 0 0 0 0 1",  # rgb 1.5 has no depth → skipped anyway
    ]
    (seq / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    return seq


def test_tum_convert_units_poses_timestamps(tmp_path, caplog):
    seq = make_tum_sequence(tmp_path)
    with caplog.at_level(logging.WARNING):
        out = convert_tum(seq, tmp_path / "scene")
    assert any("skipped 2 of 4" in r.getMessage() for r in caplog.records)
    scene = Scene(out)
    assert scene.frame_ids == ["000000", "000001"] and scene.meta.depth_scale == 5000
    f0, f1 = scene[0], scene[1]
    assert f0.depth[1, 1] == np.float32(1.0)  # 5000 → 1 m
    assert f0.depth[0, 0] == np.float32(12345 / 5000) and f0.depth[0, 1] == 0
    assert f1.depth[1, 1] == np.float32(1.2)  # depth 1.030 (6000) paired with rgb 1.033
    raw_src = np.asarray(Image.open(seq / "depth" / "1.005000.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "depth" / "000000.png")), raw_src)
    np.testing.assert_array_equal(f0.color, rgb_image(seed=0))
    fx, fy, cx, cy = TUM_INTRINSICS["freiburg1"]
    np.testing.assert_allclose(f0.K, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    np.testing.assert_allclose(f0.pose, pose(RX90, (1, 2, 3)), atol=1e-9)
    # A point at depth 1 m lands at t + R·(x, y, 1): camera forward (+z) is world -y, so y = 2 - 1.
    # (fr1's principal point lies outside the 8x6 fixture, so check pixel (1, 1) through K⁻¹.)
    p = world_point(f0, 1, 1)
    cam = np.array([(1 - cx) / fx, (1 - cy) / fy, 1.0])
    np.testing.assert_allclose(p, RX90 @ cam + [1, 2, 3], atol=1e-5)
    assert p[1] == pytest.approx(1.0, abs=1e-5)  # forward (+z camera) is world -y
    assert read_timestamps(out) == {"000000": 1.0, "000001": 1.033}
    assert [(f.frame_id, f.timestamp) for f in iter_tum_frames(seq)] == [("000000", 1.0), ("000001", 1.033)]
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert meta["timestamps_file"] == "timestamps.txt" and meta["sequence"] == seq.name

    one = convert_tum(seq, tmp_path / "one", max_frames=1, K=(500, 500, 4, 3))
    assert Scene(one).frame_ids == ["000000"]
    np.testing.assert_allclose(Scene(one).K_depth, [[500, 0, 4], [0, 500, 3], [0, 0, 1]])
    assert Scene(convert_tum(seq, tmp_path / "strided", stride=2)).frame_ids == ["000000"]


def test_tum_intrinsics_from_name():
    for n, key in (("rgbd_dataset_freiburg2_desk", "freiburg2"), ("fr3_office", "freiburg3")):
        fx, fy, cx, cy = TUM_INTRINSICS[key]
        np.testing.assert_allclose(tum_intrinsics(n), [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    with pytest.raises(SceneError, match="pass K explicitly"):
        tum_intrinsics("my_sequence")


def test_tum_bad_inputs(tmp_path):
    seq = make_tum_sequence(tmp_path)
    gt = seq / "groundtruth.txt"
    good_gt = gt.read_text()
    gt.write_text(good_gt.replace("1.035 0 0 0", "1.035 nan 0 0"))
    with pytest.raises(SceneError, match=r"groundtruth\.txt.*NaN"):
        convert_tum(seq, tmp_path / "a")
    gt.write_text(good_gt + "1.6 1 2 3\n")
    with pytest.raises(SceneError, match=r"groundtruth\.txt.*t=1\.600000"):
        convert_tum(seq, tmp_path / "a")
    gt.write_text(good_gt + "oops 1 2 3 0 0 0 1\n")
    with pytest.raises(SceneError, match=r"groundtruth\.txt:7: expected a timestamp"):
        convert_tum(seq, tmp_path / "a")
    gt.write_text(good_gt)
    save_png(seq / "depth" / "1.030000.png", depth_image(5000, W + 2, H))
    with pytest.raises(SceneError, match=r"1\.030000\.png: depth size 10x6 does not match"):
        convert_tum(seq, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    save_png(seq / "depth" / "1.030000.png", depth_image(5000))
    truncate(seq / "rgb" / "1.033000.png")
    with pytest.raises(SceneError, match=r"rgb/1\.033000\.png: corrupt"):
        convert_tum(seq, tmp_path / "a")
    (seq / "rgb.txt").unlink()
    with pytest.raises(SceneError, match=r"rgb\.txt: TUM list not found"):
        convert_tum(seq, tmp_path / "a")
    with pytest.raises(SceneError, match="TUM sequence folder not found"):
        convert_tum(tmp_path / "nowhere_freiburg1", tmp_path / "a")


# =========================================================================== 3DMatch


def make_threedmatch(root: Path) -> Path:
    save_matrix(root / "camera-intrinsics.txt", K3)
    seq = root / "seq-01"
    save_png(seq / "frame-000000.color.png", rgb_image(seed=1))
    Image.fromarray(rgb_image(seed=2)).save(seq / "frame-000001.color.jpg", quality=95)
    for i, T in enumerate((pose(), np.eye(4))):
        d = depth_image(1234 + i)
        d[0, 0] = 65535  # 7-Scenes' "no measurement"
        save_png(seq / f"frame-{i:06d}.depth.png", d)
        save_matrix(seq / f"frame-{i:06d}.pose.txt", T)
    return root


def test_threedmatch_convert(tmp_path):
    root = make_threedmatch(tmp_path / "7-scenes-unit")
    out = convert_threedmatch(root, tmp_path / "scene")
    scene = Scene(out)
    assert scene.frame_ids == ["seq-01_000000", "seq-01_000001"] and scene.meta.depth_scale == 1000
    f0 = scene[0]
    assert f0.depth[2, 2] == np.float32(1.234) and f0.depth[0, 0] == 0
    np.testing.assert_array_equal(f0.color, rgb_image(seed=1))
    np.testing.assert_allclose(f0.K, K3)
    np.testing.assert_allclose(world_point(f0, 3, 2), [1.0, 2 - 1.234, 3.0], atol=1e-5)
    np.testing.assert_allclose(world_point(f0, 6, 5), expected_world(pose(), 6, 5, 1.234), atol=1e-5)
    assert scene[1].color.shape == (H, W, 3)  # jpg colour accepted
    assert [f.frame_id for f in iter_threedmatch_frames(root, seq=1, stride=2)] == ["seq-01_000000"]


def test_threedmatch_bad_inputs(tmp_path):
    root = make_threedmatch(tmp_path / "s")
    seq = root / "seq-01"
    (seq / "frame-000001.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n")
    with pytest.raises(SceneError, match=r"frame-000001\.pose\.txt: contains NaN"):
        convert_threedmatch(root, tmp_path / "a")
    save_matrix(seq / "frame-000001.pose.txt", np.eye(4))
    save_png(seq / "frame-000001.depth.png", depth_image(1000, W, H + 1))
    with pytest.raises(SceneError, match=r"frame-000001\.depth\.png: depth size 8x7 does not match"):
        convert_threedmatch(root, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    save_png(seq / "frame-000001.depth.png", rgb_image())
    with pytest.raises(SceneError, match=r"frame-000001\.depth\.png: depth must be a single-channel 16-bit"):
        convert_threedmatch(root, tmp_path / "a")
    (seq / "frame-000001.color.jpg").unlink()
    with pytest.raises(SceneError, match=r"frame-000001\.color\.png: file not found"):
        convert_threedmatch(root, tmp_path / "a")
    (root / "camera-intrinsics.txt").unlink()
    with pytest.raises(SceneError, match=r"camera-intrinsics\.txt: 3DMatch intrinsics file not found"):
        convert_threedmatch(root, tmp_path / "a")
    with pytest.raises(SceneError, match="seq-07"):
        list(iter_threedmatch_frames(make_threedmatch(tmp_path / "t"), seq="seq-07"))


# =========================================================================== Redwood


def make_redwood(root: Path, n: int = 3) -> tuple[Path, Path, Path]:
    poses = [pose(t=(k, 0, 0)) for k in range(n)]
    for k in range(n):
        save_png(root / "color" / f"{k:05d}.png", rgb_image(seed=k))
        save_png(root / "depth" / f"{k:05d}.png", depth_image(2000 + k))
    write_log_trajectory(root / "traj.log", poses)
    return root / "color", root / "depth", root / "traj.log"


def test_redwood_log_and_convert(tmp_path):
    color, depth, log = make_redwood(tmp_path)
    entries = read_log_trajectory(log)
    assert [e.meta for e in entries] == [(0, 0, 1), (1, 1, 2), (2, 2, 3)]
    (tmp_path / "cam.json").write_text(
        '{"width": 8, "height": 6, "intrinsic_matrix": [10, 0, 0, 0, 12, 0, 3, 2, 1]}'  # column-major
    )
    np.testing.assert_allclose(read_open3d_intrinsics(tmp_path / "cam.json"), K3)
    out = convert_redwood(color, depth, log, tmp_path / "scene", tmp_path / "cam.json")
    scene = Scene(out)
    assert scene.frame_ids == ["00000", "00001", "00002"]
    f2 = scene[2]
    assert f2.depth[0, 0] == np.float32(2.002)
    np.testing.assert_allclose(f2.pose, pose(t=(2, 0, 0)))
    np.testing.assert_allclose(world_point(f2, 3, 2), [2.0, -2.002, 0.0], atol=1e-5)


def test_redwood_bad_inputs(tmp_path, caplog):
    color, depth, log = make_redwood(tmp_path)
    good = log.read_text()
    lines = good.splitlines()
    log.write_text("\n".join(lines[:5]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert [e[0] for e in list_redwood_frames(color, depth, log)] == ["00000"]
    assert any("2 frames have no pose" in r.getMessage() for r in caplog.records)
    log.write_text(good.replace("2 2 3", "2 2 9"))
    with pytest.raises(SceneError, match=r"traj\.log: pose 2 is for frame number 9"):
        convert_redwood(color, depth, log, tmp_path / "a", K3)
    log.write_text(good.replace("1 1 2", "1 1 x"))
    with pytest.raises(SceneError, match=r"traj\.log:6: bad metadata"):
        read_log_trajectory(log)
    log.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SceneError, match=r"traj\.log: 14 non-empty lines"):
        read_log_trajectory(log)
    assert lines[1] == "1 0 0 0"
    log.write_text(good.replace("0 0 1\n1 0 0 0\n", "0 0 1\n1 0 0 nan\n", 1))
    with pytest.raises(SceneError, match=r"traj\.log:1 pose 0: contains NaN"):
        read_log_trajectory(log)
    log.write_text(good)
    (color / "00002.png").unlink()
    with pytest.raises(SceneError, match="2 colour images but .* 3 depth"):
        convert_redwood(color, depth, log, tmp_path / "a", K3)
    save_png(color / "00002.png", rgb_image(W + 1, H))
    with pytest.raises(SceneError, match=r"depth/00002\.png: depth size 8x6 does not match colour"):
        convert_redwood(color, depth, log, tmp_path / "a", K3)
    assert not (tmp_path / "a").exists()
    with pytest.raises(SceneError, match="focal lengths"):
        convert_redwood(color, depth, log, tmp_path / "a", np.diag([0.0, 1, 1]))


# =========================================================================== real sample data (optional)


def _median_nn(frame_a, frame_b, invert: bool = False) -> float:
    """Median distance from frame_b's points to frame_a's, both back-projected with their poses
    (or, with `invert`, with the poses read the other way round: world-to-camera)."""
    from scipy.spatial import cKDTree

    def pts(f):
        T = np.linalg.inv(f.pose) if invert else f.pose
        return backproject(f.depth, f.K, T, stride=4)[0].numpy()

    d, _ = cKDTree(pts(frame_a)).query(pts(frame_b))
    return float(np.median(d))


def test_real_sun3d_frames_are_consistent(tmp_path):
    root = SHARED_DATA / "sun3d-mit76-studyroom"
    if not (root / "camera-intrinsics.txt").exists():
        pytest.skip(f"sample data not present: {root}")
    scene = Scene(convert_threedmatch(root, tmp_path / "sun3d"))
    assert len(scene) == 5 and scene.frame_ids[0] == "seq-01_000000"
    f0, f1, f116 = scene[0], scene[1], scene[3]
    assert f0.depth.shape == (480, 640) and f0.color.shape == (480, 640, 3)
    assert 0.3 < np.median(f0.depth[f0.depth > 0]) < 8.0  # millimetres read as metres
    assert _median_nn(f0, f1) < 0.05
    # A frame further along discriminates the pose direction: camera-to-world fits far better.
    assert _median_nn(f0, f116) < 0.5 * _median_nn(f0, f116, invert=True)


def test_real_redwood_log_frames_are_consistent(tmp_path):
    root = SHARED_DATA / "open3d-testdata-rgbd"
    rgbd = root / "RGBD"
    if not (rgbd / "odometry.log").exists():
        pytest.skip(f"sample data not present: {root}")
    K = read_open3d_intrinsics(root / "camera_primesense.json")
    np.testing.assert_allclose(K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    assert len(read_log_trajectory(rgbd / "trajectory.log")) == 5
    frames = [read_redwood_frame(c, d, p, K, fid) for fid, c, d, p in
              list_redwood_frames(rgbd / "color", rgbd / "depth", rgbd / "odometry.log")]
    assert [f.frame_id for f in frames] == ["00000", "00001", "00002", "00003", "00004"]
    assert _median_nn(frames[0], frames[4]) < 0.02
    assert _median_nn(frames[0], frames[4]) < 0.5 * _median_nn(frames[0], frames[4], invert=True)


def test_real_tum_depth_scale():
    path = SHARED_DATA / "open3d-testdata-rgbd" / "RGBD" / "other_formats" / "TUM_depth.png"
    if not path.exists():
        pytest.skip(f"sample data not present: {path}")
    from pgov3d_core.data.readers._common import read_depth_png
    from pgov3d_core.data.readers.tum import TUM_DEPTH_SCALE

    d = read_depth_png(path, TUM_DEPTH_SCALE)
    valid = d[d > 0]
    assert d.shape == (480, 640) and valid.size > 0.5 * d.size
    assert 0.5 < np.median(valid) < 5.0 and valid.max() < 10.0  # an indoor scene in metres
