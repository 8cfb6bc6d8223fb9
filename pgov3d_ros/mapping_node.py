"""`pgov3d`: the online open-vocabulary mapping node.

A thin ROS adapter around `pgov3d_core.online.OnlineMapper` (synchronisation, frame queue and
drop rule, integration worker, network passes, queries, counters): this file declares the
parameters, converts messages (pgov3d_ros.conversions), sets QoS, timers and services. No
mapping logic lives here. Names are relative to the node, so a namespace gives each robot its
own (`__ns:=/robot1` → /robot1/pgov3d/query).

Topics (remap to your driver's; `ros2 launch pgov3d_ros mapping.launch.py color_topic:=...`)
  in   color/image (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8)
       depth/image (sensor_msgs/Image: 16UC1 in depth_scale units, or 32FC1 metres), registered to
                   colour (same size and camera)
       depth/camera_info (sensor_msgs/CameraInfo of the depth image)
       pose (geometry_msgs/PoseStamped or nav_msgs/Odometry: camera-to-`frame_id` pose of the
             optical frame; parameter pose_type)
  out  ~/map_cloud, ~/query_cloud (PointCloud2), ~/markers (MarkerArray); reliable, transient local
Services: ~/query (pgov3d_interfaces/srv/Query), ~/clear, ~/save_map, ~/status (std_srvs/Trigger).
The subscriptions belong to a companion node, `<name>_inputs`, in the same namespace and with the
same remappings (`ros2 node list` shows both): it has an executor of its own, so the inputs are
drained at camera rate whatever the services are doing (see `MappingNode.__init__`).

Transport: Fast DDS's default shared-memory segment (512 KB) is smaller than one 640x480 colour
image, and large best-effort samples then go lost over UDP; the node and the replay tool use the
package's profile (config/fastdds.xml, a 16 MB segment) unless FASTDDS_DEFAULT_PROFILES_FILE is
set. Camera drivers need it too: see README "Transport".
"""

from __future__ import annotations

import json
import threading

import rclpy
import torch
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from pgov3d_core.data.frame import Frame
from pgov3d_core.labelling.text_encoder import TextEncoder, resolve_device, tiny_clip_config
from pgov3d_core.map import VoxelMap
from pgov3d_core.online import OnlineMapper, QueryError
from pgov3d_core.weights import WeightsError
from pgov3d_interfaces.srv import Query
from pgov3d_ros.conversions import (
    ConversionError,
    camera_info_to_K,
    image_to_depth,
    image_to_labels,
    image_to_rgb,
    points_to_cloud,
    pose_to_matrix,
    stamp_seconds,
)
from pgov3d_ros.markers import query_markers
from pgov3d_ros.transport import use_package_transport

# name → (default, description). Defaults mirror config/mapping.yaml.
PARAMETERS: dict[str, tuple[object, str]] = {
    "frame_id": ("map", "Fixed frame (REP 105) of the map and of every published cloud."),
    "pose_type": ("pose_stamped", "Message type on the pose topic: 'pose_stamped' or 'odometry'."),
    "sync_slop": (0.02, "Largest stamp difference (s) between depth, colour and pose of one frame."),
    "sync_queue_size": (10, "Messages kept per stream while waiting for a match."),
    "max_stamp_lead": (10.0, "Inputs stamped more than this many seconds after the node's clock (wall, or /clock "
                       "with use_sim_time) are rejected: a sender with a wrong clock. 0 disables."),
    "max_stamp_lag": (0.0, "Inputs stamped more than this many seconds before the node's clock are rejected "
                      "(0 disables: bags played without --clock keep their old stamps)."),
    "time_jump_threshold": (1.0, "A stamp this many seconds before its stream's previous one is a jump back in "
                            "time (looping bag, simulator reset): synchronisation restarts. Smaller steps back "
                            "are dropped as out of order."),
    "integration_queue_size": (4, "Synchronised frames waiting for integration; beyond it the oldest is dropped "
                               "(the node keeps up with the newest frames rather than falling behind)."),
    "input_reliability": ("best_effort", "QoS reliability of the input subscriptions: 'best_effort' (sensor data; "
                          "matches every publisher) or 'reliable' (lossless, needs reliable publishers such as "
                          "the replay tool)."),
    "voxel_size": (0.02, "Voxel edge length of the map, metres."),
    "feature_storage": ("auto", "Per-voxel feature storage: auto (chosen by a start-up micro-benchmark of this CPU), "
                        "float16, bfloat16, float32, or int8 (compact: half the memory, ≥ 99.5 % top-1 agreement "
                        "with float32 measured in bench/bench_map.py)."),
    "max_voxels": (2_000_000, "Hard cap on voxels; the least recently observed are evicted beyond it."),
    "max_depth": (5.0, "Depth readings farther than this (metres) are ignored."),
    "depth_scale": (1000.0, "16UC1 depth units per metre (1000 = millimetres)."),
    "pixel_stride": (1, "Integrate every n-th pixel in u and v (2 = a quarter of the points)."),
    "map_publish_period": (1.0, "Seconds between ~/map_cloud messages while the map changes (an unchanged "
                                "map is not re-sent: the topic is latched); 0 disables."),
    "diagnostics_period": (10.0, "Seconds between diagnostics log lines; 0 disables."),
    "max_queries": (32, "Longest accepted query list."),
    "max_query_length": (256, "Longest accepted query string, in characters."),
    "max_query_points": (0, "Most points a query returns (highest scores first; 0 = every labelled point). A "
                         "request's own max_points, when smaller and > 0, wins."),
    "map_save_path": ("pgov3d_map.npz", "File that ~/save_map writes."),
    "initial_map": ("", "Map file (from ~/save_map) to load at start-up and keep extending; empty: start empty."),
    "feature_source": ("network", "Per-voxel features: 'network' (the 3D network checkpoint) or 'oracle_labels' "
                       "(class embeddings of per-pixel labels from labels/image: testing and demos)."),
    "oracle_class_names": ("", "Comma-separated class names of labels/image ids (id k = name k-1) for "
                           "feature_source 'oracle_labels'."),
    "checkpoint": ("", "pgov3d checkpoint of the 3D network (stage 1 or 2) for feature_source 'network'."),
    "torch_threads": (1, "Torch intra-op threads of the node process (0 = torch's default, one per core). One, "
                      "because torch's OpenMP threads spin-wait when other processes share the cores (a camera "
                      "driver, SLAM): measured on 2 busy cores, 640x480 integration ran at 19 frames/s with one "
                      "thread and 3.7 with two, and a 1M-voxel query took 0.36 s and 2.2 s (idle "
                      "cores: 0.19 s and 0.11 s)."),
    "device": ("auto", "Device of the map, the 3D network and the text encoder: auto (CUDA when present), cpu, "
               "cuda."),
    "network_period": (2.0, "Seconds between network passes over the map (0 disables)."),
    "network_voxel_budget": (200000, "Most voxels one network pass covers: the whole map when it is smaller, "
                             "else the region around the most recently changed voxels."),
    "text_encoder_backend": ("sentence", "Text encoder without a network checkpoint to take it from: 'sentence' "
                             "(the bundled all-MiniLM-L6-v2, or the sentence-transformers folder "
                             "text_encoder_checkpoint) or 'open_clip' (CLIP text tower)."),
    "text_encoder_model": ("ViT-B-32", "open_clip architecture of the text encoder."),
    "text_encoder_checkpoint": ("", "Local text-encoder weights, never downloaded: an open_clip checkpoint file, "
                                "or a sentence-transformers folder ('' with backend sentence: the bundled one)."),
    "text_encoder_random_init": (False, "Build the text encoder with seeded random weights (no language "
                                 "meaning: tests and demos without real weights)."),
    "text_encoder_random_dim": (0, "With random init: > 0 builds a small CLIP of this embedding size."),
    "text_template": ("", "Prompt template of query and class texts ('' = the backend's default)."),
    "text_cache_path": ("", "Persistent text-embedding cache file (empty: in memory only)."),
}

RELIABLE_LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)


class NoCameraInfo(ConversionError):
    category = "no camera info"


def _categorised(category: str, exc: ConversionError) -> ConversionError:
    exc.category = category  # the OnlineMapper counts drops under an exception's category
    return exc


def _convert(category: str, convert, *args):
    try:
        return convert(*args)
    except ConversionError as exc:
        raise _categorised(category, exc) from None


class MappingNode(Node):
    def __init__(self, **kwargs):
        super().__init__("pgov3d", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self.frame_id = p("frame_id")
        self.depth_scale = float(p("depth_scale"))
        feature_source = p("feature_source")
        if feature_source not in ("network", "oracle_labels"):
            raise ValueError(f"parameter feature_source must be 'network' or 'oracle_labels', got {feature_source!r}")
        oracle = [c.strip() for c in p("oracle_class_names").split(",") if c.strip()] \
            if feature_source == "oracle_labels" else []
        if feature_source == "oracle_labels" and not oracle:
            raise ValueError("feature_source 'oracle_labels' needs parameter oracle_class_names")
        pose_type = p("pose_type")
        if pose_type not in ("pose_stamped", "odometry"):
            raise ValueError(f"parameter pose_type must be 'pose_stamped' or 'odometry', got {pose_type!r}")
        reliability = p("input_reliability")
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"parameter input_reliability must be 'best_effort' or 'reliable', got {reliability!r}")
        if p("torch_threads") > 0:
            torch.set_num_threads(int(p("torch_threads")))
        self.device = resolve_device(p("device"))
        if p("initial_map"):
            # A bad file is a configuration error: fail at start-up, naming it, rather than map
            # into an empty map the user believes holds their previous session.
            vmap = VoxelMap.load(p("initial_map"), device=self.device, max_depth=p("max_depth"),
                                 pixel_stride=p("pixel_stride"))
            self.get_logger().info(f"loaded {len(vmap)} voxels from {p('initial_map')}")
        else:
            vmap = VoxelMap(voxel_size=p("voxel_size"), max_voxels=p("max_voxels"), max_depth=p("max_depth"),
                            pixel_stride=p("pixel_stride"), num_label_classes=len(oracle), device=self.device,
                            feature_dtype=p("feature_storage"))
        predictor = None
        if feature_source == "network" and p("checkpoint"):
            from pgov3d_core.inference import PointFeaturePredictor

            # A missing or foreign checkpoint is a configuration error: fail at start-up, naming it.
            predictor = PointFeaturePredictor.from_checkpoint(p("checkpoint"), self.device)
        self._text_encoder_error = ""
        text_encoder = self._load_text_encoder(predictor)
        if predictor is not None and text_encoder is not None and predictor.text_encoder_identity \
                not in ("", text_encoder.identity):
            self.get_logger().warning(
                f"the checkpoint was trained against text encoder {predictor.text_encoder_identity!r} but the "
                f"node loads {text_encoder.identity!r}: query scores will be meaningless")
        streams = ["depth", "color", "pose"] + (["labels"] if oracle else [])
        self.mapper = OnlineMapper(
            vmap, streams=streams, assemble=self._to_frame, sync_slop=p("sync_slop"),
            sync_queue_size=p("sync_queue_size"), queue_size=p("integration_queue_size"),
            max_stamp_lead=p("max_stamp_lead"), max_stamp_lag=p("max_stamp_lag"),
            time_jump_threshold=p("time_jump_threshold"), predictor=predictor, text_encoder=text_encoder,
            text_encoder_error=self._text_encoder_error, oracle_class_names=oracle,
            network_voxel_budget=p("network_voxel_budget"), max_queries=p("max_queries"),
            max_query_length=p("max_query_length"), logger=self.get_logger())
        self.feature_source = feature_source
        self._camera_info: CameraInfo | None = None

        # The input subscriptions live on a companion node, `<name>_inputs` (same namespace, same
        # remappings), spun by a SingleThreadedExecutor of its own (`main`). Measured with
        # bench/bench_node.py N1, camera stand-in at 30 Hz, 2 cores: every subscription on this node
        # under the MultiThreadedExecutor integrated 11-35 % of the frames, its Python wait loop
        # taking most of a core (a ready callback in a busy exclusive group makes the wait return at
        # once); a reentrant group 76-84 %; inputs on a single-threaded executor 100 %. Services and
        # timers stay here on the multi-threaded executor, so a slow query never stops the inputs.
        # Input callbacks only hand messages to the mapper; conversion and integration run in its
        # worker thread.
        self.input_node = rclpy.create_node(
            f"{self.get_name()}_inputs", cli_args=["--ros-args", "-r", f"__node:={self.get_name()}_inputs"],
            start_parameter_services=False)
        services, timers = (MutuallyExclusiveCallbackGroup() for _ in range(2))
        qos = qos_profile_sensor_data if reliability == "best_effort" else QoSProfile(
            depth=p("sync_queue_size"), reliability=ReliabilityPolicy.RELIABLE)
        for stream, topic in (("color", "color/image"), ("depth", "depth/image"), ("labels", "labels/image")):
            if stream in streams:
                self.input_node.create_subscription(Image, topic, self._input(stream), qos)
        self.input_node.create_subscription(CameraInfo, "depth/camera_info", self._on_camera_info, qos)
        self.input_node.create_subscription(PoseStamped if pose_type == "pose_stamped" else Odometry, "pose",
                                            self._input("pose"), qos)

        self.map_pub = self.create_publisher(PointCloud2, "~/map_cloud", RELIABLE_LATCHED)
        self._published_map_revision: int | None = None
        self.query_pub = self.create_publisher(PointCloud2, "~/query_cloud", RELIABLE_LATCHED)
        self.marker_pub = self.create_publisher(MarkerArray, "~/markers", RELIABLE_LATCHED)
        self.create_service(Query, "~/query", self._on_query, callback_group=services)
        # ~/query_cloud and ~/markers are published after the reply, in their own group: their
        # serialisation (a 1M-point answer is 22 MB) no longer delays the caller. Latest wins.
        self._unpublished_answer: tuple | None = None
        self._answer_lock = threading.Lock()
        self._answer_ready = self.create_guard_condition(
            self._publish_answer, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/clear", self._on_clear, callback_group=services)
        self.create_service(Trigger, "~/save_map", self._on_save, callback_group=services)
        self.create_service(Trigger, "~/status", self._on_status, callback_group=services)
        if p("map_publish_period") > 0:
            self.create_timer(p("map_publish_period"), self.publish_map, callback_group=timers)
        if p("diagnostics_period") > 0:
            self.create_timer(p("diagnostics_period"), self._log_diagnostics, callback_group=timers)
        self.mapper.start(network_period=p("network_period"))
        self.get_logger().info(
            f"pgov3d mapping node up: voxel {vmap.voxel_size} m, cap {vmap.max_voxels} voxels, frame "
            f"'{self.frame_id}', pose from {pose_type}, features from {feature_source}, device {self.device}, "
            f"text encoder: {text_encoder.identity if text_encoder else 'none (queries disabled)'}")

    def _load_text_encoder(self, predictor) -> TextEncoder | None:
        """The configured text encoder, or None (logged) when its weights are missing: the node
        still maps, and queries answer with the reason."""
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        # Random weights exist only for the open_clip architecture (unit tests).
        backend = "open_clip" if p("text_encoder_random_init") else p("text_encoder_backend")
        cfg = {"backend": backend, "model": p("text_encoder_model"), "checkpoint": p("text_encoder_checkpoint") or None,
               "random_init": p("text_encoder_random_init"), "template": p("text_template") or None,
               "cache_path": p("text_cache_path") or None, "config_key": "parameter text_encoder_checkpoint",
               "device": str(self.device)}
        if cfg["random_init"] and p("text_encoder_random_dim") > 0:
            cfg["model_cfg"] = tiny_clip_config(p("text_encoder_random_dim"))
        if not cfg["checkpoint"] and not cfg["random_init"] and predictor is not None \
                and predictor.text_encoder_config:
            # Nothing configured: use the text encoder the network was trained against (its config is
            # in the checkpoint), so queries land in the network's embedding space.
            cfg = {**predictor.text_encoder_config, "cache_path": cfg["cache_path"], "device": str(self.device),
                   "config_key": "text_encoder.checkpoint of the network checkpoint's config"}
        try:
            return TextEncoder(cfg)
        except (WeightsError, ValueError) as exc:
            self._text_encoder_error = str(exc)
            self.get_logger().error(f"text encoder not loaded: {exc}")
            return None

    # ------------------------------------------------------------------ input

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _input(self, stream: str):
        def callback(msg) -> None:
            self.mapper.add(stream, stamp_seconds(msg.header.stamp), msg, now=self._now())
        return callback

    def _on_camera_info(self, msg: CameraInfo) -> None:
        # Not synchronised: calibration rarely changes, so the latest one is used and a lost
        # CameraInfo message never costs a frame.
        self.mapper.received["info"] += 1
        self._camera_info = msg

    def _to_frame(self, msgs: dict) -> Frame:
        """One synchronised set of messages → Frame (runs in the mapper's integration thread).
        A message that cannot be converted is dropped under the category of its stream."""
        info = self._camera_info
        if info is None:
            raise NoCameraInfo("no CameraInfo received yet on depth/camera_info")
        depth_msg, color_msg, pose_msg = msgs["depth"], msgs["color"], msgs["pose"]
        color = _convert("bad colour image", image_to_rgb, color_msg)
        depth = _convert("bad depth image", image_to_depth, depth_msg, self.depth_scale)
        if (info.width, info.height) != (depth_msg.width, depth_msg.height) and info.width and info.height:
            raise _categorised("bad camera info", ConversionError(
                f"CameraInfo is for {info.width}x{info.height} but depth is {depth_msg.width}x{depth_msg.height}"))
        pose = pose_msg.pose.pose if isinstance(pose_msg, Odometry) else pose_msg.pose
        stamp = depth_msg.header.stamp
        return Frame(
            color=color,
            depth=depth,
            K=_convert("bad camera info", camera_info_to_K, info),
            pose=_convert("bad pose", pose_to_matrix, pose),
            frame_id=f"{stamp.sec}.{stamp.nanosec:09d}",
            timestamp=stamp_seconds(stamp),
            labels=_convert("bad label image", image_to_labels, msgs["labels"]) if "labels" in msgs else None,
        )

    # ------------------------------------------------------------------ output

    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)

    def publish_map(self) -> None:
        # Only a changed map is published again: the topic is latched, and re-sending an unchanged
        # 1M-voxel map (16 MB) every period took the cores from queries for nothing.
        snapshot = self.mapper.snapshot(unless_revision=self._published_map_revision)
        if snapshot is None:
            return
        xyz, rgb, self._published_map_revision = snapshot
        self.map_pub.publish(points_to_cloud(xyz, rgb, self._header()))

    def _log_diagnostics(self) -> None:
        s = self.mapper.status()
        drops = ", ".join(f"{k} ×{v}" for k, v in sorted(s["dropped"].items(), key=lambda kv: -kv[1])[:5]) or "none"
        self.get_logger().info(
            f"frames integrated {s['frames_integrated']}, map {s['voxels']} voxels, network passes "
            f"{s['network_passes']} (last {s['last_network_pass_seconds']:.2f} s), dropped: {drops}")

    # ------------------------------------------------------------------ services

    def status(self) -> dict:
        return {**self.mapper.status(), "feature_source": self.feature_source}

    def _on_status(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = True, json.dumps(self.status())
        return response

    def _on_clear(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        n = self.mapper.clear()
        response.success, response.message = True, f"cleared {n} voxels"
        self.get_logger().info(response.message + " (synchronisation reset)")
        self.publish_map()
        return response

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self.get_parameter("map_save_path").value
        try:
            written, n = self.mapper.save(path)
            response.success, response.message = True, f"saved {n} voxels to {written.resolve()}"
        except OSError as exc:
            response.success, response.message = False, f"could not save the map to {path}: {exc}"
        self.get_logger().info(response.message)
        return response

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success = False
        cap = int(self.get_parameter("max_query_points").value)
        asked = int(request.max_points)
        cap = asked if asked > 0 and (cap <= 0 or asked < cap) else cap
        try:
            answer = self.mapper.query(list(request.queries), float(request.min_score), max_points=cap)
        except QueryError as exc:
            response.message = str(exc)
            self.get_logger().warning(f"query rejected: {exc}")
            return response
        except Exception as exc:  # never an exception out of the callback: the caller gets the reason
            self.get_logger().error(f"query failed: {exc!r}")
            response.message = f"query failed: {exc}"
            return response
        header = self._header()
        response.cloud = points_to_cloud(answer.xyz, answer.rgb, header, label=answer.labels, score=answer.scores)
        response.labels = answer.texts
        response.scores = answer.best_scores
        response.success = True
        response.message = answer.message + (f" (returned the {len(answer.labels)} best of {answer.total_hits} "
                                             "labelled points)" if len(answer.labels) < answer.total_hits else "")
        with self._answer_lock:
            self._unpublished_answer = (response.cloud, answer, header)
        self._answer_ready.trigger()
        self.get_logger().info(f"query {answer.texts} (min_score {request.min_score:.2f}): {response.message}")
        return response

    def _publish_answer(self) -> None:
        with self._answer_lock:
            latest, self._unpublished_answer = self._unpublished_answer, None
        if latest is None:  # a newer answer's trigger already published it
            return
        cloud, answer, header = latest
        self.query_pub.publish(cloud)
        self.marker_pub.publish(query_markers(answer.xyz, answer.labels, answer.texts, header))

    def destroy_node(self) -> None:
        if hasattr(self, "mapper"):  # absent when the constructor failed (bad parameter)
            self.mapper.stop()
        if hasattr(self, "input_node"):
            self.input_node.destroy_node()
        super().destroy_node()


def _spin_quietly(executor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:  # Ctrl-C / launch shutdown: the main thread cleans up
        pass


def main(args=None) -> None:
    use_package_transport()  # before rclpy creates the participant
    with rclpy.init(args=args):
        node = MappingNode()
        inputs = SingleThreadedExecutor()
        inputs.add_node(node.input_node)
        input_thread = threading.Thread(target=_spin_quietly, args=(inputs,), name="pgov3d-inputs", daemon=True)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        try:
            input_thread.start()
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            inputs.shutdown()
            executor.shutdown()
            node.destroy_node()


if __name__ == "__main__":
    main()
