"""Export the RGB-D frames of a recorded rosbag2 bag as a canonical scene folder, so that
`check_scene` can diagnose the recording (depth scale, intrinsics, pose convention) offline.

    python -m pgov3d_ros.bag_to_scene <bag folder> <out scene> [--camera realsense] \\
        [--color-topic T] [--depth-topic T] [--camera-info-topic T] [--pose-topic T] [--pose-type odometry] \\
        [--every 5] [--max-frames 100] [--check]

Topic names, pose type, depth scale and synchronisation slop come from the same launch plan as
the node (pgov3d_ros.launch_args: camera preset, topic arguments, config), so the folder holds
what the node would integrate from that bag. Poses are read from the pose topic only: for a robot
that has the camera pose on /tf alone, record the tf_pose bridge's output topic with the bag.
The bag is read three times (stamps, then poses, then the selected images), so only the frames
kept are ever held in memory.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgov3d_ros.launch_args import LAUNCH_ARGUMENTS, NODE_INPUTS, LaunchArgumentError, config_parameters, plan

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ExportSummary:
    out: Path
    frames: int
    depth_messages: int
    topics: dict[str, str]
    skipped: Counter = field(default_factory=Counter)


def _share() -> Path:
    """The installed package share (presets, config), else this source checkout's."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        return Path(get_package_share_directory("pgov3d_ros"))
    except (ImportError, PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (the venv)
        from pgov3d_ros.processes import SHARE

        return SHARE if (SHARE / "config" / "cameras").is_dir() else ROOT


def _message_class(msgtype: str):  # "sensor_msgs/msg/Image" → sensor_msgs.msg.Image
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _absolute(topic: str, namespace: str) -> str:
    return topic if topic.startswith("/") else f"{namespace}/{topic}"


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def export_bag(bag: str | Path, out: str | Path, launch_args: dict[str, str] | None = None, every: int = 1,
               max_frames: int = 200) -> ExportSummary:
    """Write every `every`-th synchronised frame of `bag` (at most `max_frames`) to the scene
    folder `out`. Raises ValueError when the bag lacks one of the input topics."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    from pgov3d_core.data.frame import Frame, FrameError
    from pgov3d_core.data.scene import write_scene
    from pgov3d_ros.conversions import ConversionError, camera_info_to_K, image_to_depth, image_to_rgb, pose_to_matrix

    chosen = plan(launch_args or {}, _share())
    spec = chosen.nodes[0]
    remapped = dict(spec.remappings)
    topics = {key: _absolute(remapped.get(own, own), spec.namespace) for key, (_, own) in NODE_INPUTS.items()}
    params = {**config_parameters(Path(spec.parameters[0])), **spec.parameters[1]}
    depth_scale = float(params.get("depth_scale", 1000.0))
    slop = float(params.get("sync_slop", 0.02))
    odometry = params.get("pose_type", "pose_stamped") == "odometry"
    summary = ExportSummary(out=Path(out), frames=0, depth_messages=0, topics=topics)

    with AnyReader([Path(bag)]) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        missing = [f"{key} {t}" for key, t in topics.items() if t not in by_topic]
        if missing:
            raise ValueError(f"bag {bag} has no {', '.join(missing)}; its topics are {sorted(by_topic)} "
                             "(set the topic arguments or --camera)")
        cls = {t: _message_class(by_topic[t].msgtype) for t in topics.values()}

        def read(*keys):
            conns = [by_topic[topics[k]] for k in keys]
            for conn, _t, raw in reader.messages(connections=conns):
                yield conn.topic, deserialize_message(bytes(raw), cls[conn.topic])

        # Pass 1: poses (small) and the first usable CameraInfo.
        pose_t, pose_T, K, info_size = [], [], None, None
        for topic, msg in read("pose_topic", "camera_info_topic"):
            if topic == topics["pose_topic"]:
                try:
                    pose_T.append(pose_to_matrix(msg.pose.pose if odometry else msg.pose))
                    pose_t.append(_stamp(msg))
                except ConversionError:
                    summary.skipped["bad pose"] += 1
            elif K is None:
                try:
                    K, info_size = camera_info_to_K(msg), (msg.width, msg.height)
                except ConversionError:
                    summary.skipped["bad camera_info"] += 1
        if K is None:
            raise ValueError(f"bag {bag}: no usable CameraInfo on {topics['camera_info_topic']}")
        order = np.argsort(pose_t)
        pose_t, pose_T = np.asarray(pose_t)[order], [pose_T[i] for i in order]

        # Pass 2: stamps of depth and colour; the frames to keep and their colour partner.
        depth_t, color_t = [], []
        for topic, msg in read("depth_topic", "color_topic"):
            (depth_t if topic == topics["depth_topic"] else color_t).append(_stamp(msg))
        summary.depth_messages = len(depth_t)
        colors = np.sort(np.asarray(color_t))

        def nearest(stamps: np.ndarray, t: float) -> int | None:
            if stamps.size == 0:
                return None
            i = int(np.searchsorted(stamps, t))
            best = min((j for j in (i - 1, i) if 0 <= j < stamps.size), key=lambda j: abs(stamps[j] - t))
            return best if abs(stamps[best] - t) <= slop else None

        wanted: dict[float, tuple[float, int]] = {}  # depth stamp → (colour stamp, pose index)
        for t in sorted(depth_t)[::max(1, every)]:
            c, p = nearest(colors, t), nearest(pose_t, t)
            if c is None or p is None:
                summary.skipped["no colour within sync_slop" if c is None else "no pose within sync_slop"] += 1
                continue
            wanted[t] = (float(colors[c]), p)
            if len(wanted) == max_frames:
                break
        color_refs = Counter(c for c, _ in wanted.values())  # a colour image may pair with two depths

        # Pass 3: the selected images, paired as they stream by.
        def frames():
            depth_msgs, color_msgs = {}, {}
            for topic, msg in read("depth_topic", "color_topic"):
                t = _stamp(msg)
                if topic == topics["depth_topic"] and t in wanted:
                    depth_msgs[t] = msg
                elif topic == topics["color_topic"] and t in color_refs:
                    color_msgs[t] = msg
                for td in [td for td in depth_msgs if wanted[td][0] in color_msgs]:
                    c, p = wanted[td]
                    d_msg, c_msg = depth_msgs.pop(td), color_msgs[c]
                    color_refs[c] -= 1
                    if color_refs[c] == 0:  # hold only images still waiting for their partner
                        del color_msgs[c]
                    try:
                        if (d_msg.width, d_msg.height) != info_size:
                            raise ConversionError(f"depth is {d_msg.width}x{d_msg.height}, CameraInfo {info_size}")
                        frame = Frame(image_to_rgb(c_msg), image_to_depth(d_msg, depth_scale), K, pose_T[p],
                                      frame_id=f"{summary.frames:06d}", timestamp=td).validate()
                    except (ConversionError, FrameError) as exc:
                        summary.skipped[f"bad frame: {exc}"] += 1
                        continue
                    summary.frames += 1
                    yield frame

        write_scene(out, frames(), class_names=[], depth_scale=1000.0, source=f"rosbag2 {bag}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgov3d_ros.bag_to_scene", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 bag folder")
    parser.add_argument("out", type=Path, help="scene folder to write")
    for name in ("camera", "color_topic", "depth_topic", "camera_info_topic", "pose_topic", "pose_type",
                 "namespace", "config"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default="",
                            help=f"as the launch argument {name}:=")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th depth frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=200, help="stop after this many frames (default 200)")
    parser.add_argument("--check", action="store_true", help="run check_scene on the result")
    args = parser.parse_args(argv)
    launch_args = {k: v for k, v in vars(args).items() if k in LAUNCH_ARGUMENTS and v}
    try:
        summary = export_bag(args.bag, args.out, launch_args, args.every, args.max_frames)
    except (LaunchArgumentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {summary.frames} frames of {summary.depth_messages} depth images to {summary.out} "
          f"(topics {summary.topics})")
    for reason, n in summary.skipped.most_common():
        print(f"  skipped {n}: {reason}")
    if args.check:
        from pgov3d_core.tools import check_scene

        return check_scene.main([str(summary.out)])
    print(f"check it with: python -m pgov3d_core.tools.check_scene {summary.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
