"""Fault campaign: a table of malformed and adversarial inputs sent to the running node over
DDS. After each one: the node is alive, status answers, the map is unchanged unless the input
was valid, and a valid frame still integrates. The table is printed (`pytest -s` shows it)."""

import copy
import time

import numpy as np
import pytest
from node_client import Client

from pgov3d_core.data.frame import Frame
from pgov3d_ros.processes import SHARE, call_service, node_command, running_node

pytestmark = pytest.mark.ros

K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def good_frame():
    u = np.arange(48)[None, :].repeat(36, 0)
    rgb = np.zeros((36, 48, 3), np.uint8)
    rgb[..., 0] = (u * 5) % 256
    return Frame(rgb, (2.0 + 0.01 * u).astype(np.float32), K, np.eye(4), frame_id="good")


def _image(encoding, w, h, step, data, bigendian=0):
    from sensor_msgs.msg import Image

    from pgov3d_ros.conversions import byte_array

    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step)
    msg.data = byte_array(np.frombuffer(bytes(data), np.uint8))
    return msg


def _pose(q=(0.0, 0.0, 0.0, 1.0), t=(0.0, 0.0, 0.0)):
    from geometry_msgs.msg import PoseStamped

    p = PoseStamped()
    p.header.frame_id = "map"
    p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w = q
    p.pose.position.x, p.pose.position.y, p.pose.position.z = t
    return p


def _info(K_, w=48, h=36):
    from pgov3d_ros.conversions import K_to_camera_info

    return K_to_camera_info(K_, w, h, None, "cam")


def _depth(depth, bigendian=False):
    from pgov3d_ros.conversions import depth_to_image

    msg = depth_to_image(depth, None, "cam")
    if bigendian:
        raw = (np.frombuffer(bytes(msg.data), "<u2")).astype(">u2")
        msg = _image("16UC1", msg.width, msg.height, msg.step, raw.tobytes(), bigendian=1)
    return msg


def _depth_32f(depth):
    return _image("32FC1", depth.shape[1], depth.shape[0], depth.shape[1] * 4, depth.astype("<f4").tobytes())


F = good_frame()
NAN_DEPTH = np.full_like(F.depth, np.nan)
PART_INF = F.depth.copy()
PART_INF[:, :10] = np.inf
PART_INF[:, 10:20] = np.nan

# name, messages to replace (a function of nothing), stamp offset, whether it is a valid frame
# (integrates), the drop category expected when it is not.
CASES = [
    ("colour encoding yuv422", lambda: {"color": _image("yuv422", 48, 36, 96, bytes(48 * 36 * 2))}, 0, False,
     "bad colour image"),
    ("colour smaller than depth", lambda: {"color": _image("rgb8", 46, 36, 138, bytes(46 * 36 * 3))}, 0, False,
     "bad frame"),
    ("image data shorter than its size", lambda: {"color": _image("rgb8", 48, 36, 144, bytes(100))}, 0, False,
     "bad colour image"),
    ("step smaller than a row", lambda: {"depth": _image("16UC1", 48, 36, 10, bytes(48 * 36 * 2))}, 0, False,
     "bad depth image"),
    ("huge declared size, no data", lambda: {"depth": _image("16UC1", 100000, 100000, 200000, bytes(64))}, 0, False,
     "bad depth image"),
    ("depth all NaN", lambda: {"depth": _depth_32f(NAN_DEPTH)}, 0, False, "bad frame"),
    ("depth 32FC1 partly inf/NaN", lambda: {"depth": _depth_32f(PART_INF)}, 0, True, None),
    ("depth 16UC1 big-endian", lambda: {"depth": _depth(F.depth, bigendian=True)}, 0, True, None),
    ("pose with NaN", lambda: {"pose": _pose(t=(float("nan"), 0.0, 0.0))}, 0, False, "bad pose"),
    ("quaternion norm 2", lambda: {"pose": _pose(q=(0.0, 0.0, 0.0, 2.0))}, 0, False, "bad pose"),
    ("zero quaternion", lambda: {"pose": _pose(q=(0.0, 0.0, 0.0, 0.0))}, 0, False, "bad pose"),
    ("zero focal length", lambda: {"info": _info(np.diag([0.0, 0.0, 1.0]))}, 0, False, "bad camera info"),
    ("CameraInfo of another resolution", lambda: {"info": _info(K, 640, 480)}, 0, False, "bad camera info"),
    ("stamp slightly out of order", lambda: {}, -0.3, False, "depth out of order"),
    ("stamp ten years ahead", lambda: {}, 10 * 365 * 86400.0, False, "depth stamp in the future"),
    ("backward time jump (bag loops)", lambda: {}, -3600.0, True, None),
]


def test_fault_campaign(tmp_path, capsys):
    import rclpy
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from std_srvs.srv import Trigger

    from pgov3d_interfaces.srv import Query

    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml", "-p", "voxel_size:=0.05",
                       "-p", "map_publish_period:=0.0", "-p", "input_reliability:=reliable",
                       "-p", "text_encoder_random_init:=true", "-p", "text_encoder_random_dim:=16",
                       "-p", f"map_save_path:={tmp_path / 'map.npz'}")
    rows = []
    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log") as proc:
            c = Client("pgov3d_fault_campaign", reliable=True)
            c.status()
            c.wait_matched()
            base = time.time()
            clock = [0.0]

            def stamp(offset=0.0):
                clock[0] += 0.2
                return base + clock[0] + offset

            c.send(F, stamp())
            s = c.wait_for(lambda s: s["frames_integrated"] == 1)
            voxels = s["voxels"]
            for name, make, offset, valid, category in CASES:
                before = c.status()
                c.send(F, stamp(offset), **copy.deepcopy(make()))
                if valid:
                    after = c.wait_for(lambda s, b=before: s["frames_integrated"] == b["frames_integrated"] + 1)
                else:
                    after = c.wait_for(lambda s, b=before, cat=category: s["dropped"].get(cat, 0)
                                       == b["dropped"].get(cat, 0) + 1)
                    time.sleep(0.2)
                    after = c.status()
                    assert after["frames_integrated"] == before["frames_integrated"], name
                    assert after["voxels"] == before["voxels"] == voxels, name
                if offset < -1.0:  # after a jump back, time carries on from there
                    base += offset
                # A valid frame still integrates afterwards (same view: the voxel set is unchanged).
                c.send(F, stamp())
                final = c.wait_for(lambda s, a=after: s["frames_integrated"] == a["frames_integrated"] + 1)
                assert final["voxels"] == voxels and proc.poll() is None, name
                got = "integrated" if valid else f"dropped: {category}"
                rows.append((name, got, "alive, status answers, valid frame integrates afterwards"))

            # Queries: empty, oversized, absurd lists; the node answers each with a reason.
            query = c.node.create_client(Query, "/pgov3d/query")
            for name, req, why in (
                ("empty query list", Query.Request(queries=[]), "no queries given"),
                ("empty query text", Query.Request(queries=["  "]), "query 0 is empty"),
                ("10 MB query text", Query.Request(queries=["x" * 10_000_000]), "characters long"),
                ("10,000 queries", Query.Request(queries=["chair"] * 10_000), "at most 32"),
                ("NaN min_score", Query.Request(queries=["chair"], min_score=float("nan")), "finite"),
            ):
                res = call_service(c.node, query, req, timeout=60)
                assert not res.success and why in res.message, (name, res.message)
                rows.append((name, f"rejected: {res.message[:60]}", "alive"))
            # A well-formed query still gets its answer (this node has no network: the reason).
            ok = call_service(c.node, query, Query.Request(queries=["chair"]), timeout=60)
            assert ok.message == f"the map holds {voxels} voxels but no features yet: the 3D network has not run"

            # An unwritable save path: a clear failure, the map kept, a later save works.
            setp = c.node.create_client(SetParameters, "/pgov3d/set_parameters")
            save = c.node.create_client(Trigger, "/pgov3d/save_map")
            for path, expect in (("/proc/pgov3d_cannot_write_here/map.npz", False), (str(tmp_path / "m.npz"), True)):
                value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path)
                assert call_service(c.node, setp, SetParameters.Request(
                    parameters=[Parameter(name="map_save_path", value=value)])).results[0].successful
                res = call_service(c.node, save, Trigger.Request())
                assert res.success is expect, res.message
                rows.append((f"save to {path}", "saved" if expect else f"refused: {res.message[:60]}", "alive"))
            assert c.status()["voxels"] == voxels and proc.poll() is None
            c.node.destroy_node()
    finally:
        rclpy.shutdown()
    with capsys.disabled():
        print("\n| input | outcome | afterwards |\n| --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
