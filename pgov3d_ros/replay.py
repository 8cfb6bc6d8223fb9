"""Replay a canonical scene folder (or a rosbag2 bag) on the mapping node's input topics.

    ros2 run pgov3d_ros replay <scene folder | bag folder> [--rate 1.0] [--fps 30] [--stride 1]

A scene folder plays --loop times (0: until interrupted) with stamps that keep increasing.
Scene folders publish color/image (rgb8), depth/image (16UC1), depth/camera_info and pose
(PoseStamped in --frame-id) with stamps spaced 1/fps apart; bags are re-published topic by topic
with their recorded timing. --rate scales playback speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from pgov3d_core.data.scene import Scene, SceneError
from pgov3d_ros.conversions import K_to_camera_info, depth_to_image, labels_to_image, matrix_to_pose, rgb_to_image
from pgov3d_ros.transport import use_package_transport

RELIABLE_INPUT = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def wait_for_subscribers(publishers, timeout: float) -> bool:
    """True once every publisher has a matched subscriber (False after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in publishers):
            return True
        time.sleep(0.05)
    return False


class SceneReplayer(Node):
    def __init__(self, scene: Scene, frame_id: str, camera_frame: str, labels: bool = False):
        super().__init__("pgov3d_replay")
        self.scene = scene
        self.labels_pub = None
        self.frame_id = frame_id
        self.camera_frame = camera_frame
        # Reliable publishers match both best-effort and reliable subscribers; with a reliable
        # subscriber (mapping node input_reliability: reliable) the replay is lossless.
        qos = RELIABLE_INPUT
        self.color_pub = self.create_publisher(Image, "color/image", qos)
        self.depth_pub = self.create_publisher(Image, "depth/image", qos)
        self.info_pub = self.create_publisher(CameraInfo, "depth/camera_info", qos)
        self.pose_pub = self.create_publisher(PoseStamped, "pose", qos)
        if labels:
            self.labels_pub = self.create_publisher(Image, "labels/image", qos)

    @property
    def publishers(self) -> list:
        return [self.color_pub, self.depth_pub, self.info_pub, self.pose_pub] + (
            [self.labels_pub] if self.labels_pub else [])

    def wait_for_subscribers(self, timeout: float) -> bool:
        return wait_for_subscribers(self.publishers, timeout)

    def publish_frame(self, frame, stamp) -> None:
        depth_msg = depth_to_image(frame.depth, stamp, self.camera_frame, self.scene.meta.depth_scale)
        self.info_pub.publish(K_to_camera_info(frame.K, frame.width, frame.height, stamp, self.camera_frame))
        self.color_pub.publish(rgb_to_image(frame.color, stamp, self.camera_frame))
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self.frame_id
        matrix_to_pose(frame.pose, pose.pose)
        self.pose_pub.publish(pose)
        if self.labels_pub is not None:
            if frame.labels is None:
                raise SceneError(f"frame {frame.frame_id}: --labels given but the scene has no label/ image")
            self.labels_pub.publish(labels_to_image(frame.labels, stamp, self.camera_frame))
        self.depth_pub.publish(depth_msg)


def replay_scene(scene: Scene, rate: float, fps: float, stride: int, frame_id: str, camera_frame: str,
                 wait: float, max_frames: int | None = None, delay: float = 0.5, labels: bool = False,
                 loops: int = 1) -> int:
    node = SceneReplayer(scene, frame_id, camera_frame, labels)
    try:
        if wait > 0 and not node.wait_for_subscribers(wait):
            node.get_logger().warning(f"no subscriber on every input topic after {wait} s; publishing anyway")
        # Discovery completes per endpoint pair; a short pause lets the subscriber side finish
        # matching too, so the first best-effort frames are not lost (like `ros2 bag play --delay`).
        time.sleep(delay)
        # Looping plays the scene again with stamps that keep increasing (a camera going round the
        # room again); loops=0 loops until interrupted (max_frames still applies).
        one_pass = list(range(0, len(scene), stride))
        if loops == 0:
            indices = [one_pass[k % len(one_pass)] for k in range(max_frames)] if max_frames else None
        else:
            indices = (one_pass * loops)[:max_frames]
        if indices is None:
            indices = _forever(one_pass)
        t0_wall = time.monotonic()
        t0_ros = node.get_clock().now()
        period = 1.0 / fps
        published = 0
        for k, (i, frame) in enumerate(prefetch(scene, indices)):
            ahead = t0_wall + k * period / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            stamp = (t0_ros + rclpy.duration.Duration(seconds=k * period)).to_msg()
            try:
                if isinstance(frame, SceneError):
                    raise frame
                node.publish_frame(frame, stamp)
                published += 1
            except SceneError as exc:
                node.get_logger().warning(f"skipping frame {scene.frame_ids[i]}: {exc}")
        elapsed = time.monotonic() - t0_wall
        finish(node, node.publishers, delay)
        node.get_logger().info(f"replayed {published} frames of {scene.root} in {elapsed:.2f} s "
                               f"({published / max(elapsed, 1e-9):.1f} frames/s)")
        return published
    finally:
        node.destroy_node()


def _forever(items):
    while True:
        yield from items


def prefetch(scene: Scene, indices, ahead: int = 4):
    """(index, frame) for `indices` in order, read and decoded `ahead` frames in advance by a
    worker thread (PNG decoding releases the GIL), so reading never holds up publishing; a frame
    that cannot be read comes as its SceneError."""
    def load(i):
        try:
            return scene[i]
        except SceneError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = deque()
        for i in indices:
            futures.append((i, pool.submit(load, i)))
            if len(futures) > ahead:
                j, future = futures.popleft()
                yield j, future.result()
        while futures:
            j, future = futures.popleft()
            yield j, future.result()


def finish(node: Node, publishers: list, delay: float, ack_timeout: float = 10.0) -> None:
    """Before the writers go away: wait until every reliable subscriber has acknowledged every
    sample (nothing in flight is lost when the process exits), and briefly for best-effort
    ones (no acknowledgements to wait for)."""
    deadline = time.monotonic() + ack_timeout
    for pub in publishers:
        left = max(0.0, deadline - time.monotonic())
        if not pub.wait_for_all_acked(rclpy.duration.Duration(seconds=left)):
            node.get_logger().warning(f"{pub.topic_name}: not every sample was acknowledged within {ack_timeout} s")
    time.sleep(delay)


def replay_bag(bag: Path, rate: float, wait: float = 10.0, delay: float = 0.5) -> int:
    """Re-publish every message of a rosbag2 bag (read with `rosbags`) with its recorded timing."""
    import importlib

    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    def get_message(msgtype: str):  # "sensor_msgs/msg/Image" → sensor_msgs.msg.Image
        package, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{package}.{kind}"), name)

    node = Node("pgov3d_replay")
    count = 0
    try:
        with AnyReader([bag]) as reader:
            pubs = {}
            for conn in reader.connections:  # every publisher first, so subscribers can match
                if conn.topic not in pubs:
                    cls = get_message(conn.msgtype)
                    pubs[conn.topic] = (node.create_publisher(cls, conn.topic, RELIABLE_INPUT), cls)
            if wait > 0 and not wait_for_subscribers([p for p, _ in pubs.values()], wait):
                node.get_logger().warning(f"not every topic has a subscriber after {wait} s; publishing anyway")
            time.sleep(delay)
            t_first = None
            t0 = time.monotonic()
            for conn, t_ns, raw in reader.messages():
                pub, cls = pubs[conn.topic]
                t_first = t_ns if t_first is None else t_first
                ahead = t0 + (t_ns - t_first) * 1e-9 / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                pub.publish(deserialize_message(bytes(raw), cls))  # bags store CDR, as DDS sends it
                count += 1
        finish(node, [p for p, _ in pubs.values()], delay)
        node.get_logger().info(f"replayed {count} messages of {bag}")
        return count
    finally:
        node.destroy_node()


def main(argv: list[str] | None = None) -> int:
    argv = rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:]
    parser = argparse.ArgumentParser(prog="ros2 run pgov3d_ros replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="canonical scene folder or rosbag2 bag folder")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of a scene folder (default 30)")
    parser.add_argument("--stride", type=int, default=1, help="publish every n-th frame of a scene folder")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--loop", type=int, default=1, metavar="N",
                        help="play a scene folder N times with increasing stamps (0: until interrupted)")
    parser.add_argument("--frame-id", default="map", help="frame of the published poses (default map)")
    parser.add_argument("--camera-frame", default="camera_optical_frame", help="frame_id of images")
    parser.add_argument("--labels", action="store_true",
                        help="also publish the scene's label/ images on labels/image (16UC1, id + 1)")
    parser.add_argument("--delay", type=float, default=0.5,
                        help="seconds to pause after subscribers appear, before the first frame (default 0.5)")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for subscribers on every topic before publishing (default 10)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.fps <= 0 or args.stride < 1 or args.loop < 0:
        parser.error("--rate and --fps must be positive, --stride ≥ 1 and --loop ≥ 0")
    use_package_transport()  # before rclpy creates the participant
    rclpy.init()
    try:
        if (args.source / "metadata.yaml").exists() or args.source.suffix in (".mcap", ".db3"):
            replay_bag(args.source, args.rate, args.wait, args.delay)
        else:
            try:
                scene = Scene(args.source)
            except SceneError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            replay_scene(scene, args.rate, args.fps, args.stride, args.frame_id, args.camera_frame, args.wait,
                         args.max_frames, args.delay, args.labels, args.loop)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
