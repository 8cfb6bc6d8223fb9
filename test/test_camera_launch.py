"""Connecting a real camera: the launch arguments → remappings/parameters logic, the camera presets,
the launch file (statically), the TF pose bridge, and over real DDS the node started with exactly
the command line the launch plan gives, integrating frames published on the drivers' topic names."""

import ast
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pgov3d_ros.launch_args import (
    LAUNCH_ARGUMENTS,
    LaunchArgumentError,
    available_presets,
    load_preset,
    plan,
    ros_arguments,
)
from pgov3d_ros.processes import LIB, SHARE, call_service, node_command, running_node

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ROOT / "config" / "cameras"
REALSENSE = {
    "color/image": "/camera/camera/color/image_raw",
    "depth/image": "/camera/camera/aligned_depth_to_color/image_raw",
    "depth/camera_info": "/camera/camera/aligned_depth_to_color/camera_info",
}


# ---------------------------------------------------------------------------- launch arguments


def test_no_arguments_start_the_node_as_before():
    chosen = plan({}, ROOT)
    assert [(n.executable, n.name) for n in chosen.nodes] == [("mapping_node", "pgov3d")]
    node = chosen.nodes[0]
    assert node.remappings == [] and node.namespace == ""
    assert node.parameters == [str(ROOT / "config" / "mapping.yaml"), {"use_sim_time": False}]
    assert chosen.rviz is False and chosen.preset is None


def test_the_issue_command_line_is_all_a_user_types():
    chosen = plan({"color_topic": "/camera/camera/color/image_raw",
                   "depth_topic": "/camera/camera/aligned_depth_to_color/image_raw",
                   "camera_info_topic": "/camera/camera/aligned_depth_to_color/camera_info",
                   "pose_topic": "/orb_slam3/camera_pose"}, ROOT)
    assert len(chosen.nodes) == 1
    assert dict(chosen.nodes[0].remappings) == {**REALSENSE, "pose": "/orb_slam3/camera_pose"}


def test_realsense_preset_and_explicit_arguments_win_over_it():
    chosen = plan({"camera": "realsense", "pose_topic": "/orb_slam3/camera_pose", "use_sim_time": "true"}, ROOT)
    node = chosen.nodes[0]
    assert dict(node.remappings) == {**REALSENSE, "pose": "/orb_slam3/camera_pose"}
    overrides = node.parameters[1]
    assert overrides["depth_scale"] == 1000.0 and overrides["pose_type"] == "pose_stamped"
    assert overrides["use_sim_time"] is True
    assert any("rs_launch.py align_depth.enable:=true" in m for m in chosen.messages)

    mine = plan({"camera": "realsense", "color_topic": "/my/color", "pose_type": "odometry",
                 "namespace": "robot1/"}, ROOT).nodes[0]
    assert dict(mine.remappings)["color/image"] == "/my/color"
    assert mine.parameters[1]["pose_type"] == "odometry"
    assert mine.namespace == "/robot1"
    # Without a pose from preset or arguments the user is told where the node expects it.
    assert any("gives no pose" in m for m in plan({"camera": "realsense"}, ROOT).messages)


def test_every_preset_is_complete_and_names_only_real_parameters():
    from pgov3d_ros.mapping_node import PARAMETERS

    names = available_presets(CAMERAS)
    assert {"realsense", "azure_kinect", "orbbec_femto", "zed2"} <= set(names)
    for name in names:
        preset = load_preset(name, CAMERAS)
        assert preset.description and preset.driver.startswith("ros2 launch "), name
        assert all(preset.topics[k].startswith("/") for k in ("color", "depth", "camera_info")), name
        assert set(preset.parameters) <= set(PARAMETERS), name
        chosen = plan({"camera": name}, ROOT)  # every preset plans
        assert len(dict(chosen.nodes[0].remappings)) >= 3, name
    # The drivers' real names and units (see each YAML for its source).
    assert load_preset("azure_kinect", CAMERAS).topics["depth"] == "/depth_to_rgb/image_raw"
    assert load_preset("orbbec_femto", CAMERAS).topics["color"] == "/camera/color/image_raw"
    zed = load_preset("zed2", CAMERAS)
    assert zed.topics["depth"] == "/zed/zed_node/depth/depth_registered" and zed.pose_source == "tf"
    assert load_preset("realsense", CAMERAS).parameters["depth_scale"] == 1000.0
    # A preset is copyable: the same file given by path plans the same.
    by_path = plan({"camera": str(CAMERAS / "realsense.yaml")}, ROOT).nodes[0]
    assert by_path.remappings == plan({"camera": "realsense"}, ROOT).nodes[0].remappings


def test_bad_arguments_and_presets_fail_with_the_reason(tmp_path):
    def error(args):
        with pytest.raises(LaunchArgumentError) as info:
            plan(args, ROOT)
        return str(info.value)

    msg = error({"camera": "realsens"})
    assert "unknown camera preset 'realsens'" in msg and "realsense" in msg and "zed2" in msg
    assert "does not exist" in error({"camera": str(tmp_path / "nope.yaml")})
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"topics": {"color": "/c"}, "parameters": {"depth_scael": 1000.0}}))
    assert "unknown node parameters ['depth_scael']" in error({"camera": str(typo)})
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text(yaml.safe_dump({"topic": {"color": "/c"}}))
    assert "unknown keys ['topic']" in error({"camera": str(bad_key)})
    assert "pose_type:='pose'" in error({"pose_type": "pose"})
    assert "not a boolean" in error({"rviz": "yes please"})
    assert "not a valid ROS topic name" in error({"color_topic": "/camera/1color"})
    assert "not a valid ROS topic name" in error({"depth_topic": "/camera depth"})
    assert "not a valid ROS namespace" in error({"namespace": "robot 1"})
    assert "must be pose_stamped" in error({"pose_source": "tf", "pose_type": "odometry"})
    assert "only used with pose_source:=tf" in error({"camera_frame": "cam"})
    assert "unknown launch arguments" in error({"colour_topic": "/c"})


def test_pose_from_tf_adds_the_bridge_on_the_same_topics():
    chosen = plan({"camera": "zed2", "namespace": "robot1"}, ROOT)
    mapping, bridge = chosen.nodes
    assert (bridge.executable, bridge.name, bridge.namespace) == ("tf_pose", "pgov3d_tf_pose", "/robot1")
    # The bridge reads the depth CameraInfo the node reads and publishes where the node listens.
    assert dict(bridge.remappings) == {"depth/camera_info": "/zed/zed_node/depth/camera_info"}
    assert "pose" not in dict(mapping.remappings)
    assert mapping.parameters[1]["pose_type"] == "pose_stamped"
    assert bridge.parameters == [{"map_frame": "map", "use_sim_time": False}]

    custom = plan({"camera": "realsense", "pose_source": "tf", "pose_topic": "/cam_pose", "map_frame": "world",
                   "camera_frame": "camera_color_optical_frame"}, ROOT)
    mapping, bridge = custom.nodes
    assert dict(mapping.remappings)["pose"] == dict(bridge.remappings)["pose"] == "/cam_pose"
    assert mapping.parameters[1]["frame_id"] == "world"
    assert bridge.parameters[0]["map_frame"] == "world"
    assert bridge.parameters[0]["camera_frame"] == "camera_color_optical_frame"


def test_ros_arguments_are_what_launch_ros_passes():
    node = plan({"camera": "realsense", "namespace": "robot1"}, ROOT).nodes[0]
    args = ros_arguments(node)
    assert args[:2] == ["-r", "__ns:=/robot1"]
    assert ["--params-file", str(ROOT / "config" / "mapping.yaml")] == args[2:4]
    assert "depth_scale:=1000.0" in args and "use_sim_time:=false" in args
    assert "color/image:=/camera/camera/color/image_raw" in args
    # Values after the parameter file: ROS applies them later, so they win over the file.
    assert args.index("depth_scale:=1000.0") > args.index("--params-file")


def test_launch_file_declares_the_plan_arguments_and_names_installed_executables():
    tree = ast.parse((ROOT / "launch" / "mapping.launch.py").read_text())  # compiles
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "pgov3d_ros.launch_args" for a in n.names}
    assert {"LAUNCH_ARGUMENTS", "plan"} <= imported
    # Every argument of LAUNCH_ARGUMENTS is declared: one DeclareLaunchArgument per item.
    declared_over = [
        comp for comp in ast.walk(tree) if isinstance(comp, ast.ListComp)
        and getattr(getattr(comp.elt, "func", None), "id", None) == "DeclareLaunchArgument"
        and ast.unparse(comp.generators[0].iter) == "LAUNCH_ARGUMENTS.items()"
    ]
    assert declared_over
    required = {"color_topic", "depth_topic", "camera_info_topic", "pose_topic", "pose_type", "namespace",
                "config", "rviz", "use_sim_time", "camera"}
    assert required <= set(LAUNCH_ARGUMENTS)
    assert {k: v[0] for k, v in LAUNCH_ARGUMENTS.items() if v[0]} == {"rviz": "false", "use_sim_time": "false"}
    executables = {kw.value.value for call in ast.walk(tree) if isinstance(call, ast.Call)
                   and getattr(call.func, "id", None) == "Node" for kw in call.keywords
                   if kw.arg == "executable" and isinstance(kw.value, ast.Constant)}
    assert {"mapping_node", "tf_pose", "rviz2"} == executables
    assert all((LIB / e).is_file() for e in executables - {"rviz2"})
    # Installed where get_package_share_directory finds them at launch time.
    assert all((SHARE / "config" / "cameras" / f"{name}.yaml").is_file() for name in available_presets(CAMERAS))


# ---------------------------------------------------------------------------- TF pose bridge


def _transform(T, parent="map", child="cam", stamp=None):
    from geometry_msgs.msg import TransformStamped
    from scipy.spatial.transform import Rotation

    tr = TransformStamped()
    tr.header.frame_id, tr.child_frame_id = parent, child
    if stamp is not None:
        tr.header.stamp = stamp
    x, y, z = (float(v) for v in T[:3, 3])
    tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = x, y, z
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    r = tr.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return tr


def test_tf_bridge_publishes_the_looked_up_pose_at_the_image_stamp():
    from builtin_interfaces.msg import Time
    from scipy.spatial.transform import Rotation
    from sensor_msgs.msg import CameraInfo

    from pgov3d_ros.conversions import pose_to_matrix
    from pgov3d_ros.tf_pose import TfPoseBridge

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_matrix()  # optical in a body frame
    T[:3, 3] = [1.0, 2.0, 0.5]
    asked, published, warnings = [], [], []

    def lookup(target, source, stamp):
        asked.append((target, source, stamp.sec))
        if stamp.sec == 99:
            raise LookupError("extrapolation into the future")
        return _transform(T, target, source, stamp=Time())  # static chain: tf2 stamps it 0

    bridge = TfPoseBridge(lookup, published.append, "map", warn=warnings.append)
    info = CameraInfo()
    info.header.frame_id, info.header.stamp = "camera_color_optical_frame", Time(sec=7, nanosec=5)
    pose = bridge.on_camera_info(info)
    assert asked == [("map", "camera_color_optical_frame", 7)]
    assert published == [pose] and (pose.header.stamp.sec, pose.header.stamp.nanosec) == (7, 5)
    assert pose.header.frame_id == "map"
    np.testing.assert_allclose(pose_to_matrix(pose.pose), T, atol=1e-9)
    assert bridge.on_camera_info(info) is None and bridge.published == 1  # same frame's CameraInfo again

    info.header.stamp = Time(sec=99)
    assert bridge.on_camera_info(info) is None
    assert bridge.failures == {"LookupError": 1} and "extrapolation" in warnings[-1]
    info.header.frame_id, info.header.stamp = "", Time(sec=8)
    assert bridge.on_camera_info(info) is None and bridge.failures["no camera frame"] == 1
    named = TfPoseBridge(lookup, published.append, "world", camera_frame="zed_left_camera_frame_optical")
    named.on_camera_info(info)
    assert asked[-1] == ("world", "zed_left_camera_frame_optical", 8)


def test_tf_pose_without_tf2_says_how_to_get_it():
    import importlib.util

    if importlib.util.find_spec("tf2_ros") is not None:
        pytest.skip("tf2_ros is installed here")
    import subprocess

    out = subprocess.run([str(LIB / "tf_pose")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "needs tf2_ros" in out.stderr + out.stdout and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- over DDS


K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def _frames(n=6):
    """A camera sliding past a wall with a colour gradient, 48x36, poses with a rotation."""
    from scipy.spatial.transform import Rotation

    from pgov3d_core.data.frame import Frame

    h, w = 36, 48
    u = np.arange(w)[None, :].repeat(h, 0)
    frames = []
    for i in range(n):
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_euler("y", 4 * i, degrees=True).as_matrix()
        pose[:3, 3] = [0.25 * i, 0.0, 0.1 * i]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = (u * 5 + 40 * i) % 256
        rgb[..., 1] = 120
        rgb[..., 2] = 30 * i
        # Depth of the world plane z = 3 m seen from this pose (ray-plane intersection), so the
        # frames are geometrically consistent, as a real recording is.
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (np.arange(h)[:, None].repeat(w, 1) - K[1, 2]) / K[1, 1],
                         np.ones((h, w))], -1)
        depth = (3.0 - pose[2, 3]) / (rays @ pose[2, :3])
        # In whole millimetres, as a 16UC1 driver sends it, so the node sees exactly these depths.
        depth = np.round(depth * 1000).astype(np.uint16).astype(np.float32) / np.float32(1000)
        frames.append(Frame(rgb, depth, K, pose, frame_id=str(i)))
    return frames


def _expected_voxels(frames, max_depth):
    from pgov3d_core.map import VoxelMap

    expected = VoxelMap(voxel_size=0.02, max_depth=max_depth)
    for frame in frames:
        expected.integrate(frame)
    return len(expected)


def _status(node, timeout=30.0):
    """The mapping node's status counters, its service found by type and name (so the test does
    not depend on how the node names it in its namespace)."""
    from std_srvs.srv import Trigger

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [n for n, types in node.get_service_names_and_types()
                 if n.endswith("/status") and "std_srvs/srv/Trigger" in types]
        if names:
            client = node.create_client(Trigger, names[0])
            reply = call_service(node, client, Trigger.Request())
            node.destroy_client(client)
            return json.loads(reply.message)
        time.sleep(0.2)
    raise TimeoutError("the mapping node's status service never appeared")


def _wait_integrated(node, n, timeout=40.0):
    deadline = time.monotonic() + timeout
    status = _status(node)
    while status["frames_integrated"] < n and time.monotonic() < deadline:
        time.sleep(0.3)
        status = _status(node)
    return status


def _publishers(node, topics, pose_topic):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    # Reliable, depth 10: what realsense-ros and the ZED wrapper use by default.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"color": node.create_publisher(Image, topics["color/image"], qos),
            "depth": node.create_publisher(Image, topics["depth/image"], qos),
            "info": node.create_publisher(CameraInfo, topics["depth/camera_info"], qos)}
    if pose_topic:
        pubs["pose"] = node.create_publisher(PoseStamped, pose_topic, qos)
    return pubs


def _wait_matched(node, pubs, timeout=30.0):
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in pubs.values()):
            return
        rclpy.spin_once(node, timeout_sec=0.1)
    raise TimeoutError({name: p.get_subscription_count() for name, p in pubs.items()})


def _stamp(k):
    from builtin_interfaces.msg import Time

    return Time(sec=1_700_000_000 + k, nanosec=250_000_000)


def _stream_and_wait(node, proc, log_path, pubs, frames, optical, first_info, messages):
    """A CameraInfo stamped `first_info`, 0.5 s before frame 0 (CameraInfo is not synchronised:
    the first one lands first), then per frame k, 0.2 s apart: its CameraInfo and `messages(frame,
    stamp)` ((publisher name, message) pairs, in order), stamped _stamp(k). Returns the node's
    status once all frames are integrated (or the wait times out); the node process must still run."""
    from pgov3d_ros.conversions import K_to_camera_info

    pubs["info"].publish(K_to_camera_info(K, 48, 36, first_info, optical))
    time.sleep(0.5)
    for k, frame in enumerate(frames):
        stamp = _stamp(k)
        pubs["info"].publish(K_to_camera_info(K, 48, 36, stamp, optical))
        for name, msg in messages(frame, stamp):
            pubs[name].publish(msg)
        time.sleep(0.2)
    status = _wait_integrated(node, len(frames))
    node.destroy_node()
    assert proc.poll() is None, log_path.read_text()
    return status


@pytest.mark.ros
def test_node_launched_for_realsense_integrates_frames_on_realsense_topics(tmp_path):
    import rclpy
    from geometry_msgs.msg import PoseStamped

    from pgov3d_ros.conversions import depth_to_image, matrix_to_pose, rgb_to_image

    chosen = plan({"camera": "realsense", "pose_topic": "/orb_slam3/camera_pose"}, SHARE)
    (spec,) = chosen.nodes
    topics = dict(spec.remappings)
    assert topics["depth/image"] == "/camera/camera/aligned_depth_to_color/image_raw"
    cmd = node_command(spec.executable, spec.name, None, *ros_arguments(spec))
    frames = _frames()
    optical = "camera_color_optical_frame"

    def messages(frame, stamp):
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, "map"
        matrix_to_pose(frame.pose, pose.pose)
        return [("pose", pose), ("color", rgb_to_image(frame.color, stamp, optical)),
                ("depth", depth_to_image(frame.depth, stamp, optical, depth_scale=1000.0))]  # mm

    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log") as proc:
            node = rclpy.create_node("pgov3d_test_realsense")
            pubs = _publishers(node, topics, topics["pose"])
            # Nothing on the node's own default names: only the remapped topics can feed it.
            _wait_matched(node, pubs)
            status = _stream_and_wait(node, proc, tmp_path / "node.log", pubs, frames, optical, _stamp(0), messages)
    finally:
        rclpy.shutdown()
    log = (tmp_path / "node.log").read_text()
    assert status["frames_integrated"] == len(frames), (status, log)
    assert status["dropped"] == {}, (status, log)
    # Millimetres read with the preset's depth_scale and max_depth: exactly the core's map.
    assert status["voxels"] == _expected_voxels(frames, max_depth=4.0), (status, log)


class _PoseBuffer:
    """Stands in for tf2_ros.Buffer (not installable here): lookup_transform with tf2's signature,
    answering map → the ZED's left optical frame from the ground-truth poses by stamp."""

    def __init__(self, poses_by_stamp, optical):
        self.poses, self.optical, self.asked = poses_by_stamp, optical, []

    def lookup_transform(self, target, source, when, timeout=None):
        sec, nsec = when.seconds_nanoseconds()
        self.asked.append((target, source, sec))
        if (target, source) != ("map", self.optical) or (sec, nsec) not in self.poses:
            raise LookupError(f"no transform {target} → {source} at {sec}.{nsec:09d}")
        return _transform(self.poses[(sec, nsec)], target, source)


@pytest.mark.ros
def test_zed_preset_with_pose_from_tf_integrates_bgra_and_metric_depth(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from pgov3d_ros.tf_pose import TfPoseNode

    chosen = plan({"camera": "zed2"}, SHARE)
    mapping, bridge_spec = chosen.nodes
    topics = dict(mapping.remappings)
    assert topics["color/image"] == "/zed/zed_node/rgb/image_rect_color"
    cmd = node_command(mapping.executable, mapping.name, None, *ros_arguments(mapping))
    frames = _frames()
    optical = "zed_left_camera_frame_optical"
    buffer = _PoseBuffer({(s.sec, s.nanosec): f.pose for s, f in ((_stamp(k), f) for k, f in enumerate(frames))},
                         optical)

    def bgra8(rgb, stamp):
        px = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="bgra8", step=rgb.shape[1] * 4)
        msg.header.stamp, msg.header.frame_id = stamp, optical
        msg.data = px.tobytes()
        return msg

    def metres_32fc1(depth, stamp):
        msg = Image(height=depth.shape[0], width=depth.shape[1], encoding="32FC1", step=depth.shape[1] * 4)
        msg.header.stamp, msg.header.frame_id = stamp, optical
        msg.data = depth.astype("<f4").tobytes()
        return msg

    rclpy.init()
    executor = SingleThreadedExecutor()
    try:
        with running_node(cmd, tmp_path / "node.log") as proc:
            # The bridge in this process with the fake buffer, but with the launch plan's
            # parameters and remappings, exactly as the tf_pose executable would get them.
            tf_node = TfPoseNode(buffer=buffer, cli_args=["--ros-args", *ros_arguments(bridge_spec)])
            executor.add_node(tf_node)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            node = rclpy.create_node("pgov3d_test_zed")
            pubs = _publishers(node, topics, None)
            _wait_matched(node, pubs)
            deadline = time.monotonic() + 30
            while tf_node.count_subscribers("pose") == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            # The first CameraInfo is stamped before any TF: no pose for it.
            status = _stream_and_wait(node, proc, tmp_path / "node.log", pubs, frames, optical, _stamp(-1),
                                      lambda frame, stamp: [("color", bgra8(frame.color, stamp)),
                                                            ("depth", metres_32fc1(frame.depth, stamp))])
    finally:
        executor.shutdown()
        rclpy.shutdown()
    log = (tmp_path / "node.log").read_text()
    assert tf_node.bridge.published == len(frames), (tf_node.bridge.failures, buffer.asked)
    assert tf_node.bridge.failures == {"LookupError": 1}  # the CameraInfo before any TF
    assert {a[:2] for a in buffer.asked} == {("map", optical)}
    assert status["frames_integrated"] == len(frames), (status, log)
    # 32FC1 metres (depth_scale not applied), bgra8 colour, poses via the bridge: the core's map.
    assert status["voxels"] == _expected_voxels(frames, max_depth=8.0), (status, log)


# ---------------------------------------------------------------------------- recorded bags


def _write_bag(path, frames, topics, invert_poses=False):
    """A rosbag2 bag as a RealSense + SLAM recording: the driver's topic names, 16UC1 mm."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from pgov3d_ros.conversions import K_to_camera_info, depth_to_image, matrix_to_pose, rgb_to_image

    typestore = get_typestore(Stores.ROS2_KILTED)
    types = {"color/image": "sensor_msgs/msg/Image", "depth/image": "sensor_msgs/msg/Image",
             "depth/camera_info": "sensor_msgs/msg/CameraInfo", "pose": "geometry_msgs/msg/PoseStamped"}
    with Writer(path, version=9) as writer:
        conns = {own: writer.add_connection(topics[own], ty, typestore=typestore) for own, ty in types.items()}
        for i, frame in enumerate(frames):
            t_ns = 1_000_000_000 + i * 100_000_000
            stamp = Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = stamp, "map"
            matrix_to_pose(np.linalg.inv(frame.pose) if invert_poses else frame.pose, pose.pose)
            msgs = {"depth/camera_info": K_to_camera_info(K, 48, 36, stamp, "camera_color_optical_frame"),
                    "color/image": rgb_to_image(frame.color, stamp, "camera_color_optical_frame"), "pose": pose,
                    "depth/image": depth_to_image(frame.depth, stamp, "camera_color_optical_frame", 1000.0)}
            # Recorded order differs per topic (pose late, as from a SLAM system).
            for own in ("depth/camera_info", "depth/image", "color/image", "pose"):
                writer.write(conns[own], t_ns + (3_000_000 if own == "pose" else 0), serialize_message(msgs[own]))


def test_a_recorded_bag_is_exported_with_the_launch_topics_and_checked(tmp_path):
    from pgov3d_core.data.scene import Scene
    from pgov3d_core.tools.check_scene import check_scene
    from pgov3d_ros.bag_to_scene import export_bag, main

    frames = _frames(8)
    topics = {**REALSENSE, "pose": "/orb_slam3/camera_pose"}
    _write_bag(tmp_path / "bag", frames, topics)
    args = {"camera": "realsense", "pose_topic": "/orb_slam3/camera_pose"}
    summary = export_bag(tmp_path / "bag", tmp_path / "scene", args, every=2)
    assert (summary.frames, summary.depth_messages) == (4, 8) and not summary.skipped
    scene = Scene(tmp_path / "scene")
    for got, want in zip(scene, frames[::2], strict=True):
        np.testing.assert_allclose(got.pose, want.pose, atol=1e-6)
        np.testing.assert_allclose(got.depth, want.depth, atol=1e-3)
        np.testing.assert_array_equal(got.color, want.color)
    assert check_scene(tmp_path / "scene").likely_convention == "camera-to-world"

    # World-to-camera poses recorded (a common SLAM output mix-up): check_scene says so.
    _write_bag(tmp_path / "inverted", frames, topics, invert_poses=True)
    export_bag(tmp_path / "inverted", tmp_path / "inverted_scene", args)
    report = check_scene(tmp_path / "inverted_scene")
    assert report.likely_convention == "world-to-camera", report

    # Topics the bag does not have: the error lists the bag's topics.
    assert main([str(tmp_path / "bag"), str(tmp_path / "x"), "--camera", "zed2"]) == 1
