"""Message conversions and the time synchroniser (no DDS needed)."""

import numpy as np
import pytest
from geometry_msgs.msg import Pose
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pgov3d_core.sync import ApproximateTimeSync
from pgov3d_ros.conversions import (
    ConversionError,
    K_to_camera_info,
    camera_info_to_K,
    cloud_to_arrays,
    depth_to_image,
    image_to_depth,
    image_to_rgb,
    matrix_to_pose,
    points_to_cloud,
    pose_to_matrix,
    rgb_to_image,
)


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
