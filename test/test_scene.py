"""The canonical scene folder: round trip, lazy reads, validation with clear errors."""

import numpy as np
import pytest

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import (
    PointCloud,
    Scene,
    SceneError,
    read_ply_cloud,
    read_ply_vertices,
    write_ply_cloud,
    write_scene,
)

K = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 5.5], [0.0, 0.0, 1.0]])


def frames(rng, n=3, h=12, w=16):
    out = []
    for i in range(n):
        pose = np.eye(4)
        pose[:3, 3] = [0.1 * i, 0.0, 0.0]
        labels = rng.integers(-1, 3, (h, w)).astype(np.int32)
        depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
        depth[0, 0] = 0.0
        out.append(Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth, K, pose, str(i), labels=labels))
    return out


def test_round_trip(tmp_path, rng):
    src = frames(rng)
    cloud = PointCloud(rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 256, (20, 3), dtype=np.uint8),
                       rng.integers(-1, 3, 20).astype(np.int32))
    root = write_scene(tmp_path / "s", src, class_names=["a", "b", "c"], depth_scale=5000.0, cloud=cloud)
    scene = Scene(root)
    assert scene.frame_ids == ["0", "1", "2"] and scene.class_names == ["a", "b", "c"]
    assert scene.meta.depth_scale == 5000.0 and np.allclose(scene.K_depth, K)
    for a, b in zip(src, scene, strict=True):
        assert np.array_equal(a.color, b.color) and np.array_equal(a.labels, b.labels)
        np.testing.assert_allclose(b.depth, a.depth, atol=0.5 / 5000)  # quantised to 1/5000 m
        assert np.allclose(a.pose, b.pose)
    back = scene.cloud()
    assert np.array_equal(back.xyz, cloud.xyz) and np.array_equal(back.labels, cloud.labels)
    assert np.array_equal(back.rgb, cloud.rgb)


def test_extra_ply_fields_are_kept(tmp_path, rng):
    cloud = PointCloud(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), np.array([0, 1, -1], np.int32))
    score, instance = np.array([0.5, 0.25, 1.0], np.float32), np.array([3, 0, 65535], np.uint16)
    write_ply_cloud(tmp_path / "c.ply", cloud, extra={"score": score, "instance": instance})
    v = read_ply_vertices(tmp_path / "c.ply")
    assert list(v) == ["x", "y", "z", "red", "green", "blue", "label", "score", "instance"]
    assert v["score"].dtype == np.float32 and np.array_equal(v["score"], score)
    assert v["instance"].dtype == np.uint16 and np.array_equal(v["instance"], instance)
    assert np.array_equal(read_ply_cloud(tmp_path / "c.ply").labels, [0, 1, -1])


def test_ply_header_and_bytes_of_a_written_cloud(tmp_path):
    cloud = PointCloud(np.array([[1.0, -2.0, 0.5]], np.float32), np.array([[1, 2, 3]], np.uint8),
                       np.array([-1], np.int32))
    write_ply_cloud(tmp_path / "c.ply", cloud, extra={"instance": np.array([7], np.int32)})
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
              b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              b"property int label\nproperty int instance\nend_header\n")
    body = bytes.fromhex("0000803f" "000000c0" "0000003f" "010203" "ffffffff" "07000000")
    assert (tmp_path / "c.ply").read_bytes() == header + body


def test_ply_reader_reads_ascii_and_big_endian_and_skips_other_elements(tmp_path):
    head = ("element vertex 2\nproperty short a\nproperty double b\n"
            "element face 1\nproperty list uchar int vertex_indices\n")
    (tmp_path / "a.ply").write_text(f"ply\nformat ascii 1.0\ncomment c\n{head}end_header\n-3 0.25\n7 1e3\n4 0 1 0 1\n")
    big = bytes.fromhex("fffd" "3fd0000000000000" "0007" "408f400000000000" "04" "00000000000000010000000000000001")
    (tmp_path / "b.ply").write_bytes(f"ply\nformat binary_big_endian 1.0\n{head}end_header\n".encode() + big)
    for name in ("a.ply", "b.ply"):  # a quad face: not the memory-mapped triangle case
        v = read_ply_vertices(tmp_path / name)
        assert v["a"].dtype == np.int16 and v["a"].tolist() == [-3, 7]
        assert v["b"].dtype == np.float64 and v["b"].tolist() == [0.25, 1000.0]
    (tmp_path / "t.ply").write_bytes((tmp_path / "b.ply").read_bytes()[:-20])  # cut inside the vertices
    with pytest.raises(SceneError, match="t.ply: malformed or truncated PLY"):
        read_ply_vertices(tmp_path / "t.ply")
    (tmp_path / "n.ply").write_text("not a ply\n")
    with pytest.raises(SceneError, match="n.ply: malformed or truncated PLY"):
        read_ply_vertices(tmp_path / "n.ply")


def test_missing_and_extra_ids_are_named(tmp_path, rng):
    root = write_scene(tmp_path / "s", frames(rng))
    (root / "pose" / "1.txt").unlink()
    with pytest.raises(SceneError, match=r"color/ has 1 id\(s\) missing elsewhere, e.g. \['1'\]"):
        Scene(root)


def test_bad_pose_names_the_file(tmp_path, rng):
    root = write_scene(tmp_path / "s", frames(rng))
    (root / "pose" / "2.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 nan 0\n0 0 0 1\n")
    with pytest.raises(SceneError, match=r"pose/2.txt: contains NaN"):
        Scene(root)
    (root / "pose" / "2.txt").write_text("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(SceneError, match=r"pose/2.txt: rotation is not orthonormal"):
        Scene(root)


def test_truncated_png_and_wrong_depth_size_name_the_file(tmp_path, rng, caplog):
    root = write_scene(tmp_path / "s", frames(rng))
    data = (root / "depth" / "1.png").read_bytes()
    (root / "depth" / "1.png").write_bytes(data[: len(data) // 2])
    scene = Scene(root)
    with pytest.raises(SceneError, match=r"depth/1.png: corrupt or unreadable image"):
        scene[1]
    from PIL import Image

    Image.fromarray(np.ones((5, 5), np.uint16)).save(root / "depth" / "2.png")
    with pytest.raises(SceneError, match=r"depth/2.png: depth is 5x5 but the scene's depth images are 16x12"):
        scene[2]
    # Iteration with skip_bad logs and skips both, keeps the good frame.
    kept = [f.frame_id for f in scene.iter_frames(skip_bad=True)]
    assert kept == ["0"] and "skipping frame 1" in caplog.text


def test_not_a_scene(tmp_path):
    with pytest.raises(SceneError, match="not a directory"):
        Scene(tmp_path / "nope")
    with pytest.raises(SceneError, match="missing folder"):
        Scene(tmp_path)
