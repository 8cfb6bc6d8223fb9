"""Message conversions and the time synchroniser (no DDS needed)."""

import numpy as np
import pytest
from geometry_msgs.msg import Pose
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from pgov3d_core.sync import ApproximateTimeSync
from pgov3d_ros.conversions import (
    ConversionError,
    K_to_camera_info,
    camera_info_to_K,
    cloud_to_arrays,
    depth_to_image,
    image_to_depth,
    image_to_labels,
    image_to_rgb,
    labels_to_image,
    matrix_to_pose,
    points_to_cloud,
    pose_to_matrix,
    rgb_to_image,
)
from pgov3d_ros.markers import query_markers


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    if pixels.dtype.itemsize > 1:
        row = row.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    raw = row.view(np.uint8).reshape(h, -1)
    step = raw.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, : raw.shape[1]] = raw
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=step, data=data.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_with_padded_rows(rng, encoding):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    px = rgb[:, :, ::-1] if encoding.startswith("bgr") else rgb
    if encoding.endswith("a8"):
        px = np.concatenate([px, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(image_to_rgb(make_image(np.ascontiguousarray(px), encoding, pad=3)), rgb)


def test_mono8_and_round_trip(rng):
    grey = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(make_image(grey, "mono8")), np.repeat(grey[:, :, None], 3, 2))
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(rgb_to_image(rgb, Header().stamp, "cam")), rgb)


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_16uc1_scale_padding_and_endianness(bigendian):
    raw = np.array([[0, 1000, 2500], [65535, 1, 300]], dtype=np.uint16)
    depth = image_to_depth(make_image(raw, "16UC1", pad=2, bigendian=bigendian), depth_scale=1000.0)
    np.testing.assert_allclose(depth, raw / 1000.0, rtol=1e-6)
    tum = image_to_depth(make_image(raw, "16UC1"), depth_scale=5000.0)
    assert tum[0, 1] == pytest.approx(0.2)


def test_depth_32fc1_and_round_trip():
    d = np.array([[np.nan, 1.25], [0.0, np.inf]], dtype=np.float32)
    out = image_to_depth(make_image(d, "32FC1", bigendian=True))
    assert np.isnan(out[0, 0]) and out[0, 1] == 1.25 and out[1, 0] == 0 and np.isinf(out[1, 1])
    back = image_to_depth(depth_to_image(np.array([[1.234, np.nan]]), Header().stamp, "cam"), 1000.0)
    np.testing.assert_allclose(back, [[1.234, 0.0]], atol=1e-6)


def test_bad_images_raise_clear_errors():
    with pytest.raises(ConversionError, match="unsupported colour encoding 'yuv422'"):
        image_to_rgb(make_image(np.zeros((2, 2, 2), np.uint8), "yuv422"))
    with pytest.raises(ConversionError, match="unsupported depth encoding"):
        image_to_depth(make_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    short = make_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    short.data = bytes(10)
    with pytest.raises(ConversionError, match="expected"):
        image_to_rgb(short)
    with pytest.raises(ConversionError, match="empty"):
        image_to_rgb(Image(height=0, width=0, encoding="rgb8", step=0))


def test_camera_info_and_zero_focal_length():
    K = np.array([[500.0, 0, 320], [0, 505.0, 240], [0, 0, 1]])
    assert np.array_equal(camera_info_to_K(K_to_camera_info(K, 640, 480, Header().stamp, "cam")), K)
    with pytest.raises(ConversionError, match="invalid K"):
        camera_info_to_K(CameraInfo())


def test_pose_quaternion_order_and_bad_poses():
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("zyx", [30, -20, 10], degrees=True).as_matrix()
    T[:3, 3] = [1.0, -2.0, 0.5]
    pose = Pose()
    matrix_to_pose(T, pose)
    np.testing.assert_allclose(pose_to_matrix(pose), T, atol=1e-12)
    # 90° about z: ROS quaternion (x, y, z, w) = (0, 0, sin45, cos45) maps x → y.
    p = Pose()
    p.orientation.z, p.orientation.w = np.sin(np.pi / 4), np.cos(np.pi / 4)
    np.testing.assert_allclose(pose_to_matrix(p)[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    nan = Pose()
    nan.position.x = float("nan")
    with pytest.raises(ConversionError, match="NaN"):
        pose_to_matrix(nan)
    with pytest.raises(ConversionError, match="norm"):
        pose_to_matrix(Pose(orientation=Pose().orientation.__class__(x=0.0, y=0.0, z=0.0, w=0.0)))


def test_pointcloud2_round_trip(rng):
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    label = rng.integers(-1, 5, 50).astype(np.int32)
    score = rng.random(50).astype(np.float32)
    msg = points_to_cloud(xyz, rgb, Header(frame_id="map"), label=label, score=score)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "label", "score"]
    assert msg.point_step == 24 and msg.width == 50 and msg.header.frame_id == "map"
    out = cloud_to_arrays(msg)
    assert np.array_equal(np.stack([out["x"], out["y"], out["z"]], 1), xyz)
    assert np.array_equal(out["rgb"], rgb) and np.array_equal(out["label"], label)
    assert np.array_equal(out["score"], score)
    assert points_to_cloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), Header()).width == 0


def test_query_markers_box_each_query_and_skip_sparse_ones(rng):
    # Query 0: 200k points in a 2 x 1 x 0.5 m box (its extent comes from a strided subset);
    # query 1: 5 points (below min_points, no marker); query 2: none.
    big = rng.uniform([1.0, -0.5, 0.0], [3.0, 0.5, 0.5], size=(200_000, 3)).astype(np.float32)
    few = rng.normal(size=(5, 3)).astype(np.float32)
    xyz = np.concatenate([big, few])
    labels = np.concatenate([np.zeros(len(big), np.int64), np.ones(5, np.int64)])
    out = query_markers(xyz, labels, ["sofa", "lamp", "cat"], Header(frame_id="map"))
    assert out.markers[0].action == out.markers[0].DELETEALL
    texts = [m for m in out.markers if m.ns == "pgov3d_query_labels"]
    assert [m.text for m in texts] == ["sofa (200000)"]  # the count is of all points, not the subset
    box = next(m for m in out.markers if m.ns != "pgov3d_query_labels" and m.action == m.ADD)
    corners = np.array([[p.x, p.y, p.z] for p in box.points])
    full_lo, full_hi = np.percentile(big, [2, 98], axis=0)
    assert np.allclose(corners.min(0), full_lo, atol=0.02) and np.allclose(corners.max(0), full_hi, atol=0.02)
    assert abs(texts[0].pose.position.x - 2.0) < 0.05 and texts[0].pose.position.z > full_hi[2]


# ------------------------------------------------------------------ fixed bytes (no round trips)


def test_encoders_write_the_expected_bytes():
    stamp = Header().stamp
    rgb = rgb_to_image(np.array([[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [250, 251, 252]]], np.uint8), stamp, "cam")
    assert (rgb.height, rgb.width, rgb.encoding, rgb.is_bigendian, rgb.step) == (2, 2, "rgb8", 0, 6)
    assert bytes(rgb.data) == bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 250, 251, 252]) and rgb.header.frame_id == "cam"
    # Millimetres, little-endian uint16; NaN, inf, <= 0 and beyond 65.535 m are 0 (invalid).
    depth = depth_to_image(np.array([[1.234, np.nan, 0.0, -1.0], [0.0016, 65.535, 65.6, np.inf]]), stamp, "cam")
    assert (depth.encoding, depth.is_bigendian, depth.step) == ("16UC1", 0, 8)
    assert bytes(depth.data) == bytes.fromhex("d204" "0000" "0000" "0000" "0200" "ffff" "0000" "0000")
    labels = labels_to_image(np.array([[-1, 0], [2, 70000]]), stamp, "cam")  # id + 1, clipped to uint16
    assert bytes(labels.data) == bytes.fromhex("0000" "0100" "0300" "ffff")
    cloud = points_to_cloud(np.array([[1.0, -2.0, 0.5], [0.0, 0.25, -1.5]]), np.array([[1, 2, 3], [255, 0, 128]]),
                            Header(frame_id="map"), label=np.array([-1, 7], np.int32))
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1), ("label", 16, PointField.INT32, 1)]
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step, cloud.is_bigendian) == (1, 2, 20, 40, False)
    # rgb: the bits 0x00RRGGBB of a float32, little-endian.
    assert bytes(cloud.data) == bytes.fromhex("0000803f" "000000c0" "0000003f" "03020100" "ffffffff"
                                              "00000000" "0000803e" "0000c0bf" "8000ff00" "07000000")


def test_decoders_read_hand_written_bytes():
    bgr = Image(height=2, width=2, encoding="bgr8", is_bigendian=0, step=8,  # two padding bytes per row
                data=bytes([3, 2, 1, 6, 5, 4, 0xAA, 0xBB, 9, 8, 7, 0, 0, 255, 0xCC, 0xDD]))
    assert image_to_rgb(bgr).tolist() == [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [255, 0, 0]]]
    big = Image(height=2, width=1, encoding="16UC1", is_bigendian=1, step=2, data=bytes.fromhex("03e8" "1388"))
    assert image_to_depth(big, 1000.0).tolist() == [[1.0], [5.0]]  # 1000 and 5000 mm
    f32 = Image(height=1, width=2, encoding="32FC1", is_bigendian=0, step=8, data=bytes.fromhex("0000a03f" "0000c07f"))
    out = image_to_depth(f32)
    assert out.dtype == np.float32 and out[0, 0] == 1.25 and np.isnan(out[0, 1])
    lab = Image(height=1, width=3, encoding="16UC1", is_bigendian=0, step=6, data=bytes.fromhex("0000" "0500" "0100"))
    assert image_to_labels(lab).tolist() == [[-1, 4, 0]]
    # A driver's cloud: big-endian, a uint16 field and padding to a 12-byte point.
    fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
              PointField(name="ring", offset=4, datatype=PointField.UINT16, count=1),
              PointField(name="t", offset=8, datatype=PointField.INT32, count=1)]
    msg = PointCloud2(height=1, width=2, fields=fields, is_bigendian=True, point_step=12, row_step=24,
                      data=bytes.fromhex("3fc00000" "0102" "eeee" "fffffffe" "c1200000" "ffff" "eeee" "00000003"))
    out = cloud_to_arrays(msg)
    assert out["x"].tolist() == [1.5, -10.0] and out["ring"].tolist() == [258, 65535]
    assert out["t"].tolist() == [-2, 3]
    rgb = PointCloud2(height=1, width=1, fields=[PointField(name="rgb", offset=0, datatype=PointField.FLOAT32,
                                                            count=1)], point_step=4, row_step=4,
                      data=bytes.fromhex("8000ff00"))
    assert cloud_to_arrays(rgb)["rgb"].tolist() == [[255, 0, 128]]


class Recorder:
    def __init__(self):
        self.matches, self.drops = [], []

    def sync(self, slop=0.02, queue_size=10):
        return ApproximateTimeSync(["depth", "color", "pose"], "depth", slop, queue_size,
                                   on_match=self.matches.append,
                                   on_drop=lambda s, t, category, why: self.drops.append((s, round(t, 3), why)))


def test_sync_matches_nearest_within_slop():
    r = Recorder()
    s = r.sync(slop=0.02)
    s.add("pose", 0.995, "p0")
    s.add("pose", 1.012, "p1")
    s.add("color", 1.005, "c0")
    s.add("depth", 0.9, "early")  # every other stream is already past 0.92: cannot match
    assert r.drops == [("depth", 0.9, "no pose message within 0.02 s")]
    s.add("depth", 1.0, "d0")  # nearest pose (0.995) wins over the later one (1.012)
    assert r.matches == [{"depth": "d0", "color": "c0", "pose": "p0"}]
    s.add("depth", 1.04, "d1")  # colour has not reached 1.06 yet: wait instead of dropping
    assert len(r.matches) == 1 and len(r.drops) == 1
    s.add("color", 1.045, "c1")
    s.add("pose", 1.05, "p2")
    assert r.matches[-1] == {"depth": "d1", "color": "c1", "pose": "p2"}
    s.add("depth", 1.1, "d2")
    s.add("color", 1.2, "c2")
    s.add("pose", 1.2, "p3")
    assert len(r.matches) == 2 and r.drops[-1] == ("depth", 1.1, "no color message within 0.02 s")


def test_sync_rejects_out_of_order_stamps():
    r = Recorder()
    s = r.sync()
    s.add("depth", 2.0, "d0")
    s.add("depth", 1.5, "late")
    assert r.drops == [("depth", 1.5, "stamp 1.500000 not after previous 2.000000")]
    s.add("color", 2.0, "c")
    s.add("pose", 2.0, "p")
    s.add("color", 2.5, "c2")
    s.add("pose", 2.5, "p2")
    assert r.matches == [{"depth": "d0", "color": "c", "pose": "p"}]
