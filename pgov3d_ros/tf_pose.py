"""`pgov3d_tf_pose`: the camera's pose from TF, published as the mapping node's `pose` input.

Most robots publish where the camera is on TF (map → odom → base_link → … → the camera's optical
frame), not as a topic. For each CameraInfo of the depth stream this node looks up
`map_frame → camera frame` at the CameraInfo's stamp and publishes it as a PoseStamped with that
same stamp, so the mapping node's synchroniser pairs it with exactly that depth image.

The camera frame is the CameraInfo's header.frame_id unless `camera_frame` is set: by the
sensor_msgs/CameraInfo definition that is the optical frame of the image (REP 103 optical axes:
z forward, x right, y down), which is the frame the mapping node needs the pose of — a body
frame such as camera_link (x forward) would rotate every frame.

tf2_ros is part of every ROS 2 install but not of the PyPI wheels this repository's venv uses, so
it is imported only when the node starts without an injected buffer. The bridge logic
(`TfPoseBridge`) takes any `lookup(target, source, stamp)`, which is how the tests run it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import rclpy
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo

PARAMETERS: dict[str, tuple[object, str]] = {
    "map_frame": ("map", "Fixed frame the pose is expressed in (the mapping node's frame_id)."),
    "camera_frame": ("", "Optical frame whose pose is published; empty: each CameraInfo's header.frame_id."),
    "lookup_timeout": (0.1, "Seconds to wait for the transform at a CameraInfo stamp: a SLAM system's TF often "
                       "arrives after the image. Frames whose transform does not arrive in time get no pose."),
}

TF2_MISSING = ("pgov3d_tf_pose needs tf2_ros, which comes with every ROS 2 install but not with the PyPI "
               "wheels: source your ROS 2 install (source /opt/ros/<distro>/setup.bash), or publish the "
               "camera's optical-frame pose on a topic and launch with pose_source:=topic")


def pose_from_transform(transform, stamp) -> PoseStamped:
    """A TransformStamped from lookup_transform(map, camera) — which maps camera coordinates into
    the map, i.e. it *is* the camera-to-map pose — as a PoseStamped at `stamp`. The stamp is the
    image's, not the transform's: tf2 stamps lookups through static-only chains with time 0."""
    pose = PoseStamped()
    pose.header.stamp = stamp
    pose.header.frame_id = transform.header.frame_id
    t, q = transform.transform.translation, transform.transform.rotation
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = t.x, t.y, t.z
    pose.pose.orientation.x, pose.pose.orientation.y = q.x, q.y
    pose.pose.orientation.z, pose.pose.orientation.w = q.z, q.w
    return pose


class TfPoseBridge:
    """CameraInfo in → PoseStamped out, through `lookup(target_frame, source_frame, stamp)`
    (tf2_ros.Buffer.lookup_transform in the node). Counts what it published and why it did not."""

    def __init__(self, lookup: Callable, publish: Callable[[PoseStamped], None], map_frame: str,
                 camera_frame: str = "", warn: Callable[[str], None] | None = None):
        self.lookup, self.publish = lookup, publish
        self.map_frame, self.camera_frame = map_frame, camera_frame
        self.warn = warn or (lambda _msg: None)
        self.published = 0
        self.failures: Counter[str] = Counter()
        self._last_stamp: tuple[int, int] | None = None
        self._last_warning = 0.0

    def _fail(self, reason: str, detail: str) -> None:
        self.failures[reason] += 1
        now = time.monotonic()
        if now - self._last_warning > 2.0:  # throttled: a missing TF link fails every frame
            self._last_warning = now
            self.warn(f"no pose published: {detail}")

    def on_camera_info(self, msg: CameraInfo) -> PoseStamped | None:
        stamp = msg.header.stamp
        key = (stamp.sec, stamp.nanosec)
        if key == self._last_stamp:  # a re-sent CameraInfo of the same frame: its pose is out already
            return None
        frame = self.camera_frame or msg.header.frame_id
        if not frame:
            self._fail("no camera frame", "the CameraInfo has an empty frame_id; set parameter camera_frame")
            return None
        try:
            transform = self.lookup(self.map_frame, frame, stamp)
        except Exception as exc:  # tf2's Lookup/Connectivity/Extrapolation errors, timeouts
            self._fail(type(exc).__name__, f"{self.map_frame} → {frame} at {stamp.sec}.{stamp.nanosec:09d}: {exc}")
            return None
        pose = pose_from_transform(transform, stamp)
        self.publish(pose)
        self.published += 1
        self._last_stamp = key
        return pose


def make_tf_buffer(node: Node):
    """A tf2_ros Buffer filled by a TransformListener on its own thread (so that a lookup waiting
    in a callback does not block the listener), or RuntimeError saying how to get tf2_ros."""
    try:
        from tf2_ros.buffer import Buffer
        from tf2_ros.transform_listener import TransformListener
    except ImportError as exc:
        raise RuntimeError(TF2_MISSING) from exc
    buffer = Buffer(node=node)
    return buffer, TransformListener(buffer, node, spin_thread=True)


class TfPoseNode(Node):
    def __init__(self, buffer=None, **kwargs):
        super().__init__("pgov3d_tf_pose", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self._listener = None
        if buffer is None:
            buffer, self._listener = make_tf_buffer(self)
        self.buffer = buffer
        timeout = Duration(seconds=float(p("lookup_timeout")))

        def lookup(target: str, source: str, stamp):
            return self.buffer.lookup_transform(target, source, Time.from_msg(stamp), timeout=timeout)

        # Reliable: matches the mapping node's input subscription in both its reliability modes.
        publisher = self.create_publisher(PoseStamped, "pose", QoSProfile(depth=10,
                                                                          reliability=ReliabilityPolicy.RELIABLE))
        self.bridge = TfPoseBridge(lookup, publisher.publish, p("map_frame"), p("camera_frame"),
                                   warn=self.get_logger().warning)
        # Sensor-data QoS, as for the mapping node's inputs: it matches every driver's publisher.
        self.create_subscription(CameraInfo, "depth/camera_info", self.bridge.on_camera_info,
                                 qos_profile_sensor_data)
        self.get_logger().info(f"publishing the pose of {p('camera_frame') or 'each CameraInfo frame_id'} "
                               f"in {p('map_frame')} from TF on {publisher.topic_name}")


def main(args=None) -> int:
    # As ros2/demos: the context manager shuts rclpy down (if still up) however the block ends.
    with rclpy.init(args=args):
        node = None
        try:
            node = TfPoseNode()
            rclpy.spin(node)
        except RuntimeError as exc:  # tf2_ros missing: one clear line, not a traceback
            rclpy.logging.get_logger("pgov3d_tf_pose").fatal(str(exc))
            return 1
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if node is not None:
                node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
