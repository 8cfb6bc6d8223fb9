"""`pgov3d_mapping`: the online open-vocabulary mapping node.

Thin ROS adapter around `pgov3d_core.map.VoxelMap`: messages are converted to a core `Frame`
(pgov3d_ros.conversions), synchronised (pgov3d_ros.sync) and integrated; services answer from
the map. No mapping logic lives here.

Topics (remap to your driver's):
  in   color/image (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8)
       depth/image (sensor_msgs/Image: 16UC1 in depth_scale units, or 32FC1 metres), registered to
                   colour (same size and camera)
       depth/camera_info (sensor_msgs/CameraInfo of the depth image)
       pose (geometry_msgs/PoseStamped or nav_msgs/Odometry: camera-to-`frame_id` pose of the
             optical frame; parameter pose_type)
  out  /pgov3d/map_cloud (PointCloud2 x y z rgb; reliable, transient local)
Services: /pgov3d/query (pgov3d_interfaces/srv/Query), /pgov3d/clear and /pgov3d/save_map
(std_srvs/Trigger).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config
from pgov3d_core.map import VoxelMap
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
)
from pgov3d_ros.markers import query_markers
from pgov3d_ros.sync import ApproximateTimeSync

# name → (default, description). Defaults mirror config/mapping.yaml.
PARAMETERS: dict[str, tuple[object, str]] = {
    "frame_id": ("map", "Fixed frame (REP 105) of the map and of every published cloud."),
    "pose_type": ("pose_stamped", "Message type on the pose topic: 'pose_stamped' or 'odometry'."),
    "sync_slop": (0.02, "Largest stamp difference (s) between depth, colour and pose of one frame."),
    "sync_queue_size": (10, "Messages kept per stream while waiting for a match."),
    "integration_queue_size": (4, "Synchronised frames waiting for integration; beyond it the oldest is dropped "
                               "(the node keeps up with the newest frames rather than falling behind)."),
    "input_reliability": ("best_effort", "QoS reliability of the input subscriptions: 'best_effort' (sensor data; "
                          "matches every publisher) or 'reliable' (lossless, needs reliable publishers such as "
                          "the replay tool)."),
    "voxel_size": (0.02, "Voxel edge length of the map, metres."),
    "max_voxels": (2_000_000, "Hard cap on voxels; the least recently observed are evicted beyond it."),
    "max_depth": (5.0, "Depth readings farther than this (metres) are ignored."),
    "depth_scale": (1000.0, "16UC1 depth units per metre (1000 = millimetres)."),
    "pixel_stride": (1, "Integrate every n-th pixel in u and v (2 = a quarter of the points)."),
    "map_publish_period": (1.0, "Seconds between /pgov3d/map_cloud messages; 0 disables."),
    "diagnostics_period": (10.0, "Seconds between diagnostics log lines; 0 disables."),
    "max_queries": (32, "Longest accepted query list."),
    "max_query_length": (256, "Longest accepted query string, in characters."),
    "map_save_path": ("pgov3d_map.npz", "File that /pgov3d/save_map writes."),
    "initial_map": ("", "Map file (from /pgov3d/save_map) to load at start-up and keep extending; empty: start empty."),
    "feature_source": ("network", "Per-voxel features: 'network' (the 3D network checkpoint) or 'oracle_labels' "
                       "(class embeddings of per-pixel labels from labels/image: testing and demos)."),
    "oracle_class_names": ("", "Comma-separated class names of labels/image ids (id k = name k-1) for "
                           "feature_source 'oracle_labels'."),
    "checkpoint": ("", "pgov3d checkpoint of the 3D network (stage 1 or 2) for feature_source 'network'."),
    "device": ("auto", "Device of the 3D network and text encoder: auto (CUDA when present), cpu, cuda."),
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


class MappingNode(Node):
    def __init__(self, **kwargs):
        super().__init__("pgov3d_mapping", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self.frame_id = p("frame_id")
        self.depth_scale = float(p("depth_scale"))
        self.feature_source = p("feature_source")
        if self.feature_source not in ("network", "oracle_labels"):
            raise ValueError(f"parameter feature_source must be 'network' or 'oracle_labels', got "
                             f"{self.feature_source!r}")
        self.oracle_classes = [c.strip() for c in p("oracle_class_names").split(",") if c.strip()]
        if self.feature_source == "oracle_labels" and not self.oracle_classes:
            raise ValueError("feature_source 'oracle_labels' needs parameter oracle_class_names")
        self.map = VoxelMap(voxel_size=p("voxel_size"), max_voxels=p("max_voxels"), max_depth=p("max_depth"),
                            stride=p("pixel_stride"), num_label_classes=len(self.oracle_classes))
        if p("initial_map"):
            # A bad file is a configuration error: fail at start-up, naming it, rather than map
            # into an empty map the user believes holds their previous session.
            self.map = VoxelMap.load(p("initial_map"), max_depth=p("max_depth"), stride=p("pixel_stride"))
            self.get_logger().info(f"loaded {len(self.map)} voxels from {p('initial_map')}")
        self._text_encoder_error = ""
        self.predictor = None
        self.network_passes = 0
        self.last_pass_seconds = 0.0
        if self.feature_source == "network" and p("checkpoint"):
            from pgov3d_core.inference import PointFeaturePredictor

            device = "cuda" if p("device") == "auto" and torch.cuda.is_available() else (
                "cpu" if p("device") == "auto" else p("device"))
            # A missing or foreign checkpoint is a configuration error: fail at start-up, naming it.
            self.predictor = PointFeaturePredictor.from_checkpoint(p("checkpoint"), device)
        self.text_encoder = self._load_text_encoder()
        if self.predictor is not None and self.text_encoder is not None and self.predictor.text_encoder_identity \
                not in ("", self.text_encoder.identity):
            self.get_logger().warning(
                f"the checkpoint was trained against text encoder {self.predictor.text_encoder_identity!r} but the "
                f"node loads {self.text_encoder.identity!r}: query scores will be meaningless")
        # The map is shared by the input, timer and service threads; every access holds this lock
        # briefly (integration of one frame, a copy for publishing, one query).
        self.map_lock = threading.Lock()
        self.frames_integrated = 0
        self.drops: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.integration_seconds = 0.0
        self._camera_info: CameraInfo | None = None
        self._last_drop_log = 0.0

        # Inputs in one mutually exclusive group (the synchroniser is single-threaded); services and
        # timers in others, so a query or a publish never waits for integration and vice versa.
        inputs = ReentrantCallbackGroup()  # callbacks only enqueue; the synchroniser has its own lock
        self._sync_lock = threading.Lock()
        services = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        self._pending: deque[dict] = deque(maxlen=max(1, int(p("integration_queue_size"))))
        # Integration (conversion + VoxelMap.integrate) in its own group, fed by the input callbacks.
        self.create_timer(0.005, self._integrate_pending, callback_group=MutuallyExclusiveCallbackGroup())

        # CameraInfo is not synchronised: calibration rarely changes, so the latest one is used and a
        # lost CameraInfo message never costs a frame.
        streams = ["depth", "color", "pose"] + (["labels"] if self.feature_source == "oracle_labels" else [])
        self.sync = ApproximateTimeSync(streams, pivot="depth", slop=p("sync_slop"),
                                        queue_size=p("sync_queue_size"), on_match=self._on_synced,
                                        on_drop=self._on_sync_drop)
        reliability = p("input_reliability")
        if reliability not in ("best_effort", "reliable"):
            raise ValueError(f"parameter input_reliability must be 'best_effort' or 'reliable', got {reliability!r}")
        qos = qos_profile_sensor_data if reliability == "best_effort" else QoSProfile(
            depth=p("sync_queue_size"), reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Image, "color/image", lambda m: self._on_stream("color", m), qos,
                                 callback_group=inputs)
        self.create_subscription(Image, "depth/image", lambda m: self._on_stream("depth", m), qos,
                                 callback_group=inputs)
        self.create_subscription(CameraInfo, "depth/camera_info", self._on_camera_info, qos, callback_group=inputs)
        if "labels" in streams:
            self.create_subscription(Image, "labels/image", lambda m: self._on_stream("labels", m), qos,
                                     callback_group=inputs)
        pose_type = p("pose_type")
        if pose_type == "pose_stamped":
            self.create_subscription(PoseStamped, "pose", lambda m: self._on_stream("pose", m), qos,
                                     callback_group=inputs)
        elif pose_type == "odometry":
            self.create_subscription(Odometry, "pose", lambda m: self._on_stream("pose", m), qos,
                                     callback_group=inputs)
        else:
            raise ValueError(f"parameter pose_type must be 'pose_stamped' or 'odometry', got {pose_type!r}")

        self.map_pub = self.create_publisher(PointCloud2, "/pgov3d/map_cloud", RELIABLE_LATCHED)
        self.query_pub = self.create_publisher(PointCloud2, "/pgov3d/query_cloud", RELIABLE_LATCHED)
        self.marker_pub = self.create_publisher(MarkerArray, "/pgov3d/markers", RELIABLE_LATCHED)
        self.create_service(Query, "/pgov3d/query", self._on_query, callback_group=services)
        self.create_service(Trigger, "/pgov3d/clear", self._on_clear, callback_group=services)
        self.create_service(Trigger, "/pgov3d/save_map", self._on_save, callback_group=services)
        self.create_service(Trigger, "/pgov3d/status", self._on_status, callback_group=services)
        if p("map_publish_period") > 0:
            self.create_timer(p("map_publish_period"), self.publish_map, callback_group=timers)
        if self.predictor is not None and p("network_period") > 0:
            # Its own callback group: a network pass never blocks integration or queries (the map lock
            # is held only to copy the inputs and to store the outputs).
            self.create_timer(p("network_period"), self.network_pass, callback_group=MutuallyExclusiveCallbackGroup())
        if p("diagnostics_period") > 0:
            self.create_timer(p("diagnostics_period"), self._log_diagnostics, callback_group=timers)
        self.get_logger().info(
            f"pgov3d mapping node up: voxel {self.map.voxel_size} m, cap {self.map.max_voxels} voxels, "
            f"frame '{self.frame_id}', pose from {pose_type}, features from {self.feature_source}, "
            f"text encoder: {self.text_encoder.identity if self.text_encoder else 'none (queries disabled)'}"
        )

    def _load_text_encoder(self) -> TextEncoder | None:
        """The configured text encoder, or None (logged) when its weights are missing: the node
        still maps, and queries answer with the reason."""
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        # Random weights exist only for the open_clip architecture (unit tests).
        backend = "open_clip" if p("text_encoder_random_init") else p("text_encoder_backend")
        cfg = {"backend": backend, "model": p("text_encoder_model"), "checkpoint": p("text_encoder_checkpoint") or None,
               "random_init": p("text_encoder_random_init"), "template": p("text_template") or None,
               "cache_path": p("text_cache_path") or None, "config_key": "parameter text_encoder_checkpoint"}
        if cfg["random_init"] and p("text_encoder_random_dim") > 0:
            cfg["model_cfg"] = tiny_clip_config(p("text_encoder_random_dim"))
        if not cfg["checkpoint"] and not cfg["random_init"] and self.predictor is not None \
                and self.predictor.text_encoder_config:
            # Nothing configured: use the text encoder the network was trained against (its config is
            # in the checkpoint), so queries land in the network's embedding space.
            cfg = {**self.predictor.text_encoder_config, "cache_path": cfg["cache_path"],
                   "config_key": "text_encoder.checkpoint of the network checkpoint's config"}
        try:
            return TextEncoder(cfg)
        except (WeightsError, ValueError) as exc:
            self._text_encoder_error = str(exc)
            self.get_logger().error(f"text encoder not loaded: {exc}")
            return None

    # ------------------------------------------------------------------ input

    def _drop(self, category: str, reason: str) -> None:
        """Count a dropped frame under `category` and log why (throttled)."""
        self.drops[category] += 1
        now = time.monotonic()
        if now - self._last_drop_log > 2.0:  # throttled: a bad stream must not flood the log
            self._last_drop_log = now
            self.get_logger().warning(f"frame dropped: {reason}")

    def _on_sync_drop(self, stream: str, stamp: float, why: str) -> None:
        self._drop("unsynchronised", f"{stream} at {stamp:.3f}: {why}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._sync_lock:
            self.received["info"] += 1
            self._camera_info = msg

    def _on_stream(self, stream: str, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._sync_lock:
            self.received[stream] += 1
            self.sync.add(stream, stamp, msg)

    def _on_synced(self, msgs: dict) -> None:
        """Queue a synchronised frame. Input callbacks stay this cheap so that every subscription is
        drained promptly: a slow callback in the input group would starve the subscriptions served
        after it and their messages would be lost from the middleware's history."""
        if len(self._pending) == self._pending.maxlen:
            self._drop("integration backlog", "dropped the oldest waiting frame: integration is slower than input")
        self._pending.append(msgs)

    def _integrate_pending(self) -> None:
        while self._pending:
            self._integrate(self._pending.popleft())

    def _integrate(self, msgs: dict) -> None:
        try:
            t = time.perf_counter()
            frame = self._to_frame(msgs)
            with self.map_lock:
                self.map.integrate(frame)
            self.frames_integrated += 1
            self.integration_seconds += time.perf_counter() - t
        except ConversionError as exc:
            self._drop("bad message", str(exc))
        except FrameError as exc:
            self._drop("bad frame", str(exc))
        except Exception as exc:  # never let a bad frame kill the integration thread
            self._drop("unexpected error", repr(exc))

    def _to_frame(self, msgs: dict) -> Frame:
        if self._camera_info is None:
            raise ConversionError("no CameraInfo received yet on depth/camera_info")
        info = self._camera_info
        depth_msg, color_msg, pose_msg = msgs["depth"], msgs["color"], msgs["pose"]
        if (info.width, info.height) != (depth_msg.width, depth_msg.height) and info.width and info.height:
            raise ConversionError(
                f"CameraInfo is for {info.width}x{info.height} but depth is {depth_msg.width}x{depth_msg.height}"
            )
        pose = pose_msg.pose.pose if isinstance(pose_msg, Odometry) else pose_msg.pose
        stamp = depth_msg.header.stamp
        return Frame(
            color=image_to_rgb(color_msg),
            depth=image_to_depth(depth_msg, self.depth_scale),
            K=camera_info_to_K(info),
            pose=pose_to_matrix(pose),
            frame_id=f"{stamp.sec}.{stamp.nanosec:09d}",
            timestamp=stamp.sec + stamp.nanosec * 1e-9,
            labels=image_to_labels(msgs["labels"]) if "labels" in msgs else None,
        ).validate()

    # ------------------------------------------------------------------ output

    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)

    def publish_map(self) -> None:
        with self.map_lock:
            xyz = self.map.points().cpu().numpy().copy()
            rgb = self.map.colors().cpu().numpy()
        self.map_pub.publish(points_to_cloud(xyz, rgb, self._header()))

    def network_pass(self) -> int:
        """Run the 3D network over (a budgeted region of) the map and store per-voxel features.
        Returns the number of voxels updated."""
        budget = int(self.get_parameter("network_voxel_budget").value)
        with self.map_lock:
            n = len(self.map)
            changed = self.map.changed()
            if n == 0 or not bool(changed.any()):
                return 0
            points = self.map.points()
            if n <= budget:
                rows = torch.arange(n)
            else:  # the `budget` voxels nearest to the most recently observed changed voxel
                seen = torch.where(changed, self.map.last_seen(), torch.zeros_like(self.map.last_seen()))
                seed = points[int(torch.argmax(seen))]
                rows = torch.topk(((points - seed) ** 2).sum(1), budget, largest=False).indices
            keys = self.map.keys()[rows].clone()
            xyz = points[rows].clone()
            rgb = self.map.colors()[rows].clone()
        t = time.perf_counter()
        try:
            feats = self.predictor.features(xyz, rgb)
        except Exception as exc:  # a failing pass must not stop mapping
            self.get_logger().error(f"network pass failed: {exc!r}")
            return 0
        with self.map_lock:
            rows, found = self.map.rows_of(keys)  # voxels evicted meanwhile are skipped
            self.map.set_features(rows[found], feats[found])
        self.network_passes += 1
        self.last_pass_seconds = time.perf_counter() - t
        return int(found.sum())

    def _log_diagnostics(self) -> None:
        drops = ", ".join(f"{k} ×{v}" for k, v in self.drops.most_common(5)) or "none"
        self.get_logger().info(
            f"frames integrated {self.frames_integrated}, map {len(self.map)} voxels, network passes "
            f"{self.network_passes} (last {self.last_pass_seconds:.2f} s), dropped: {drops}"
        )

    # ------------------------------------------------------------------ services

    def _on_clear(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.map_lock:
            n = len(self.map)
            self.map.clear()
        response.success, response.message = True, f"cleared {n} voxels"
        self.get_logger().info(response.message)
        self.publish_map()
        return response

    def status(self) -> dict:
        """Counters for diagnostics and benchmarks."""
        return {
            "frames_integrated": self.frames_integrated,
            "voxels": len(self.map),
            "voxels_with_features": int(self.map.has_feature().sum()) if len(self.map) else 0,
            "dropped": dict(self.drops),
            "received": dict(self.received),
            "integration_seconds": round(self.integration_seconds, 3),
            "network_passes": self.network_passes,
            "last_network_pass_seconds": round(self.last_pass_seconds, 3),
            "feature_source": self.feature_source,
        }

    def _on_status(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = True, json.dumps(self.status())
        return response

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self.get_parameter("map_save_path").value
        try:
            with self.map_lock:
                written = self.map.save(path)
                n = len(self.map)
            response.success, response.message = True, f"saved {n} voxels to {written.resolve()}"
        except OSError as exc:
            response.success, response.message = False, f"could not save the map to {path}: {exc}"
        self.get_logger().info(response.message)
        return response

    def _validate_queries(self, queries: list[str]) -> str | None:
        """Why a query request is unusable, or None."""
        max_queries = self.get_parameter("max_queries").value
        max_len = self.get_parameter("max_query_length").value
        if len(queries) == 0:
            return "no queries given: pass at least one text, e.g. {queries: ['chair']}"
        if len(queries) > max_queries:
            return f"{len(queries)} queries given; at most {max_queries} are accepted (parameter max_queries)"
        for i, q in enumerate(queries):
            if not q.strip():
                return f"query {i} is empty"
            if len(q) > max_len:
                return f"query {i} is {len(q)} characters long; at most {max_len} (parameter max_query_length)"
        return None

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        try:
            return self._answer_query(request, response)
        except Exception as exc:  # never an exception out of the callback: the caller gets the reason
            self.get_logger().error(f"query failed: {exc!r}")
            response.success, response.message = False, f"query failed: {exc}"
            return response

    def _answer_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success = False
        queries = [q.strip() for q in request.queries]
        reason = self._validate_queries(list(request.queries))
        if reason is None and not np.isfinite(request.min_score):
            reason = f"min_score must be a finite number, got {request.min_score}"
        if reason is None and self.text_encoder is None:
            reason = f"no text encoder is loaded: {self._text_encoder_error}"
        if reason is None and len(self.map) == 0:
            reason = "the map is empty: no RGB-D frame has been integrated yet"
        if reason is not None:
            response.message = reason
            self.get_logger().warning(f"query rejected: {reason}")
            return response
        text = self.text_encoder.encode(queries)
        class_text = self.text_encoder.encode(self.oracle_classes) if self.oracle_classes else None
        with self.map_lock:
            if self.feature_source == "oracle_labels":
                self.map.set_features_from_labels(class_text)
            if self.map.features is None:
                response.message = (f"the map holds {len(self.map)} voxels but no features yet: "
                                    "the 3D network has not run")
                return response
            result = self.map.query(text, min_score=float(request.min_score))
            hit = result.labels >= 0
            xyz = self.map.points()[hit].cpu().numpy().copy()
            rgb = self.map.colors()[hit].cpu().numpy()
        labels = result.labels[hit].cpu().numpy().astype(np.int32)
        scores = result.scores[hit].cpu().numpy().astype(np.float32)
        header = self._header()
        response.cloud = points_to_cloud(xyz, rgb, header, label=labels, score=scores)
        response.labels = queries
        response.scores = [float(v) for v in result.best_scores.cpu().numpy()]
        counts = np.bincount(labels, minlength=len(queries)) if len(labels) else np.zeros(len(queries), int)
        response.success = True
        response.message = ", ".join(f"{q}: {n} points" for q, n in zip(queries, counts, strict=True))
        self.query_pub.publish(response.cloud)
        self.marker_pub.publish(query_markers(xyz, labels, queries, header))
        self.get_logger().info(f"query {queries} (min_score {request.min_score:.2f}): {response.message}")
        return response


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = MappingNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
