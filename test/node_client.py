"""A test-side rclpy client of the mapping node: publishers on its inputs, its services."""

import json
import time

from pgov3d_ros.processes import call_service


class Client:
    """The test's rclpy node: publishers on the node's inputs and its services."""

    def __init__(self, name, ns="/pgov3d", reliable=False):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_srvs.srv import Trigger

        self.rclpy = rclpy
        self.node = rclpy.create_node(name)
        self.status_client = self.node.create_client(Trigger, f"{ns}/status")
        self.clear_client = self.node.create_client(Trigger, f"{ns}/clear")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.ns = ns
        self.pubs = {"color": self.node.create_publisher(Image, "color/image", qos),
                     "depth": self.node.create_publisher(Image, "depth/image", qos),
                     "info": self.node.create_publisher(CameraInfo, "depth/camera_info", qos),
                     "pose": self.node.create_publisher(PoseStamped, "pose", qos)}

    def status(self):
        from std_srvs.srv import Trigger

        return json.loads(call_service(self.node, self.status_client, Trigger.Request()).message)

    def clear(self):
        from std_srvs.srv import Trigger

        return call_service(self.node, self.clear_client, Trigger.Request())

    def wait_matched(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while any(p.get_subscription_count() == 0 for p in self.pubs.values()):
            assert time.monotonic() < deadline, "the node's subscriptions never matched"
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        time.sleep(0.3)

    def send(self, frame, stamp_s, x=None, **replace):
        """Publish one frame (CameraInfo, colour, pose, depth) stamped `stamp_s`; `x` moves the
        pose; `replace` swaps any of the four messages for a given one."""
        from builtin_interfaces.msg import Time
        from geometry_msgs.msg import PoseStamped

        from pgov3d_ros.conversions import K_to_camera_info, depth_to_image, matrix_to_pose, rgb_to_image

        stamp = Time(sec=int(stamp_s), nanosec=int(round((stamp_s % 1) * 1e9)) % 1_000_000_000)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, "map"
        matrix = frame.pose.copy()
        if x is not None:
            matrix[0, 3] = x
        matrix_to_pose(matrix, pose.pose)
        msgs = {"info": K_to_camera_info(frame.K, frame.width, frame.height, stamp, "cam"),
                "color": rgb_to_image(frame.color, stamp, "cam"), "pose": pose,
                "depth": depth_to_image(frame.depth, stamp, "cam")}
        for name, msg in replace.items():
            msg.header.stamp = stamp
            msgs[name] = msg
        for name in ("info", "color", "pose", "depth"):
            self.pubs[name].publish(msgs[name])

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if predicate(s):
                return s
            time.sleep(0.1)
        raise AssertionError(f"status never satisfied the condition: {s}")
