"""The mapping node over real DDS: replayed frames build the same map as the core library,
garbage input is skipped, and clear/save services work."""

import json
import time

import numpy as np
import pytest

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import Scene, write_scene
from pgov3d_core.map import VoxelMap
from pgov3d_ros.processes import SHARE, call_service, node_command, replay_command, running_node

pytestmark = pytest.mark.ros

K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def corridor_scene(root, n=6):
    """A camera sliding along a wall with a colour gradient (depth varies across the image)."""
    frames = []
    h, w = 36, 48
    u = np.arange(w)[None, :].repeat(h, 0)
    for i in range(n):
        pose = np.eye(4)
        pose[0, 3] = 0.3 * i
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = (u * 5 + 40 * i) % 256
        rgb[..., 1] = 120
        depth = (2.0 + 0.01 * u).astype(np.float32)
        frames.append(Frame(rgb, depth, K, pose, frame_id=str(i)))
    return write_scene(root, frames, class_names=[], depth_scale=1000.0)


def wait_for(predicate, timeout, spin_node):
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(spin_node, timeout_sec=0.1)
        if predicate():
            return True
    return False


def test_replayed_scene_builds_the_core_map_and_survives_garbage(tmp_path):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_srvs.srv import Trigger

    from pgov3d_ros.conversions import K_to_camera_info, cloud_to_arrays, depth_to_image, rgb_to_image

    scene_dir = corridor_scene(tmp_path / "scene")
    expected = VoxelMap(voxel_size=0.05, max_depth=5.0)
    for frame in Scene(scene_dir):
        expected.integrate(frame)

    save_path = tmp_path / "saved_map.npz"
    cmd = node_command(
        "mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
        "-p", "voxel_size:=0.05", "-p", "map_publish_period:=0.2", "-p", f"map_save_path:={save_path}",
        "-p", "text_encoder_backend:=open_clip",  # no CLIP weights: queries must say why they fail
    )
    replay_cmd = replay_command(scene_dir, "--fps", "5")
    rclpy.init()
    clouds = []
    try:
        with running_node(cmd, tmp_path / "node.log") as node_proc:
            node = rclpy.create_node("pgov3d_test")
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(PointCloud2, "/pgov3d/map_cloud", clouds.append, latched)
            with running_node(replay_cmd, tmp_path / "replay.log") as replay_proc:
                assert replay_proc.wait(60) == 0, (tmp_path / "replay.log").read_text()
            assert wait_for(lambda: clouds and clouds[-1].width == len(expected), 20, node), (
                f"map cloud never reached {len(expected)} points (last: {clouds[-1].width if clouds else None})\n"
                + (tmp_path / "node.log").read_text()
            )
            cloud = cloud_to_arrays(clouds[-1])
            assert clouds[-1].header.frame_id == "map"
            np.testing.assert_allclose(
                np.sort(cloud["x"]), np.sort(expected.voxel_means()[:, 0].numpy()), atol=1e-5
            )

            # Garbage: wrong encoding, size mismatch, NaN pose, zero focal length, CameraInfo for
            # another resolution, no valid depth. Each is one complete frame (stamps within
            # max_stamp_lead, after the replay's) and must be dropped under its own category.
            pub_c = node.create_publisher(Image, "color/image", qos_profile_sensor_data)
            pub_d = node.create_publisher(Image, "depth/image", qos_profile_sensor_data)
            pub_i = node.create_publisher(CameraInfo, "depth/camera_info", qos_profile_sensor_data)
            pub_p = node.create_publisher(PoseStamped, "pose", qos_profile_sensor_data)
            wait_for(lambda: pub_d.get_subscription_count() > 0, 10, node)
            status_client = node.create_client(Trigger, "/pgov3d/status")

            def status():
                return json.loads(call_service(node, status_client, Trigger.Request()).message)

            frame = Scene(scene_dir)[0]
            t0 = node.get_clock().now()

            def send(k, color=None, depth=None, K_=K, pose_nan=False, size=None, encoding=None):
                """One frame's four messages; returns the drop counters it added."""
                before = status()
                stamp = (t0 + rclpy.duration.Duration(seconds=0.5 + 0.5 * k)).to_msg()
                c = rgb_to_image(frame.color if color is None else color, stamp, "cam")
                c.encoding = encoding or c.encoding
                d = depth_to_image(frame.depth if depth is None else depth, stamp, "cam")
                info = K_to_camera_info(K_, *(size or (frame.width, frame.height)), stamp, "cam")
                p = PoseStamped()
                p.header.stamp = stamp
                p.pose.orientation.w = 1.0
                p.pose.position.x = float("nan") if pose_nan else 5.0
                pub_i.publish(info)  # the latest CameraInfo is used: it must be there before the depth
                assert wait_for(lambda: status()["received"]["info"] > before["received"]["info"], 10, node)
                for pub, msg in ((pub_c, c), (pub_p, p), (pub_d, d)):
                    pub.publish(msg)
                    rclpy.spin_once(node, timeout_sec=0.01)
                total = sum(before["dropped"].values())
                assert wait_for(lambda: sum(status()["dropped"].values()) > total, 10, node), (
                    f"frame {k} was not dropped: {status()}")
                after = status()
                assert after["frames_integrated"] == before["frames_integrated"]
                return {cat: n - before["dropped"].get(cat, 0) for cat, n in after["dropped"].items()
                        if n != before["dropped"].get(cat, 0)}

            assert send(0, encoding="yuv422") == {"bad colour image": 1}
            assert send(1, color=frame.color[:-2]) == {"bad frame": 1}  # colour/depth size mismatch
            assert send(2, pose_nan=True) == {"bad pose": 1}
            assert send(3, K_=np.diag([0.0, 0.0, 1.0])) == {"bad camera info": 1}
            assert send(4, size=(10, 10)) == {"bad camera info": 1}  # CameraInfo for another resolution
            assert send(5, depth=np.full_like(frame.depth, np.nan)) == {"bad frame": 1}  # no valid depth
            final = status()
            assert final["frames_integrated"] == len(Scene(scene_dir))
            assert final["dropped"] == {"bad colour image": 1, "bad frame": 2, "bad pose": 1, "bad camera info": 2}
            assert sum(final["pending"].values()) == 0

            from pgov3d_interfaces.srv import Query

            no_encoder = call_service(node, node.create_client(Query, "/pgov3d/query"),
                                      Query.Request(queries=["chair"]))
            assert not no_encoder.success
            assert no_encoder.message.startswith(
                "no text encoder is loaded: parameter text_encoder_checkpoint is not set"
            )

            saver = node.create_client(Trigger, "/pgov3d/save_map")
            saved = call_service(node, saver, Trigger.Request())
            assert saved.success, saved.message
            assert node_proc.poll() is None, (tmp_path / "node.log").read_text()
            log = (tmp_path / "node.log").read_text()
            assert "frame dropped" in log

            clear = call_service(node, node.create_client(Trigger, "/pgov3d/clear"), Trigger.Request())
            assert clear.success and clear.message == f"cleared {len(expected)} voxels"
            assert wait_for(lambda: clouds[-1].width == 0, 10, node)
            node.destroy_node()
    finally:
        rclpy.shutdown()

    # The saved map is exactly the core library's map of the same frames: garbage changed nothing.
    saved_map = VoxelMap.load(save_path)
    a, b = expected.state_dict(), saved_map.state_dict()
    order_a, order_b = np.argsort(a["keys"]), np.argsort(b["keys"])
    assert np.array_equal(a["keys"][order_a], b["keys"][order_b])
    assert np.array_equal(a["count"][order_a], b["count"][order_b])
    np.testing.assert_allclose(a["color"][order_a], b["color"][order_b], atol=1e-3)
    assert saved_map.integrations == len(Scene(scene_dir))


def test_query_labels_chairs_inside_the_ground_truth_chairs(tmp_path):
    """Oracle feature mode: per-pixel ground-truth labels → voxel votes → class-name embeddings as
    features; `/pgov3d/query` with a random-weight text encoder must then put 'chair' exactly where
    the scene's chairs are (the text encoder maps equal texts to equal embeddings)."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from scipy.spatial import cKDTree
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from pgov3d_core.data.synthetic import CLASS_NAMES, generate_scene
    from pgov3d_interfaces.srv import Query
    from pgov3d_ros.conversions import cloud_to_arrays

    scene_dir = generate_scene(tmp_path / "room", seed=5, n_frames=8, width=96, height=72)
    truth = Scene(scene_dir).cloud()
    cmd = node_command(
        "mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
        "-p", "feature_source:=oracle_labels", "-p", f"oracle_class_names:={','.join(CLASS_NAMES)}",
        "-p", "text_encoder_random_init:=true", "-p", "text_encoder_random_dim:=64", "-p", "voxel_size:=0.05",
    )
    replay_cmd = replay_command(scene_dir, "--fps", "5", "--labels")
    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log") as node_proc:
            node = rclpy.create_node("pgov3d_test_query")
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            query_clouds, markers = [], []
            node.create_subscription(PointCloud2, "/pgov3d/query_cloud", query_clouds.append, latched)
            node.create_subscription(MarkerArray, "/pgov3d/markers", markers.append, latched)
            with running_node(replay_cmd, tmp_path / "replay.log") as replay_proc:
                assert replay_proc.wait(60) == 0, (tmp_path / "replay.log").read_text()
            client = node.create_client(Query, "/pgov3d/query")
            # Random-weight text embeddings of different words still have cosines around 0.7, so only
            # exact matches (1.0) may pass: other classes' voxels must stay unlabelled.
            res = call_service(node, client, Query.Request(queries=["chair", "table", "floor"], min_score=0.99))
            # A capped answer: at most 30 points, in equal shares per query (small objects still show).
            capped = call_service(node, client, Query.Request(queries=["chair", "table", "floor"], min_score=0.99,
                                                              max_points=30))
            assert wait_for(lambda: query_clouds and markers, 10, node)
            assert node_proc.poll() is None
            node.destroy_node()
    finally:
        rclpy.shutdown()
    log = (tmp_path / "node.log").read_text()
    assert res.success, res.message + log
    assert list(res.labels) == ["chair", "table", "floor"]
    np.testing.assert_allclose(res.scores, 1.0, atol=0.01)  # each query matches its class exactly
    cloud = cloud_to_arrays(res.cloud)
    assert {f.name for f in res.cloud.fields} == {"x", "y", "z", "rgb", "label", "score"}
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    # Precision: returned chair points whose nearest ground-truth point is a chair.
    nearest = truth.labels[cKDTree(truth.xyz).query(xyz)[1]]
    for q, name in enumerate(["chair", "table", "floor"]):
        mine = cloud["label"] == q
        assert mine.sum() > 20, (name, mine.sum())
        precision = float(np.mean(nearest[mine] == CLASS_NAMES.index(name)))
        assert precision >= 0.9, (name, precision)
    # Recall: ground-truth chair voxels that the map observed and labelled chair.
    chair_truth = truth.xyz[truth.labels == CLASS_NAMES.index("chair")]
    seen = cKDTree(xyz).query(chair_truth)[0] < 0.05
    chair_pts = cKDTree(xyz[cloud["label"] == 0])
    recall = float(np.mean(chair_pts.query(chair_truth[seen])[0] < 0.05))
    assert recall >= 0.8, recall
    capped_labels = cloud_to_arrays(capped.cloud)["label"]
    assert capped.success and capped.cloud.width == 30, capped.message
    assert np.bincount(capped_labels, minlength=3).tolist() == [10, 10, 10]
    assert "returned the 30 best of" in capped.message
    # Markers: a text label and a box per query with points.
    texts = [m.text for m in markers[-1].markers if m.ns == "pgov3d_query_labels"]
    assert sorted(t.split(" (")[0] for t in texts) == ["chair", "floor", "table"]


def test_network_pass_fills_features_and_queries_use_the_checkpoint_text_space(tmp_path):
    """feature_source 'network': a (random-weight) 3D-network checkpoint; the node's timer runs it
    over the map, every voxel gets a feature, and /pgov3d/query answers with the text encoder named
    in the checkpoint's config (no text-encoder parameter given)."""
    import json

    import rclpy
    from std_srvs.srv import Trigger

    from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config
    from pgov3d_core.models import build_model, resolve_model_config
    from pgov3d_core.training.checkpoint import FORMAT, VERSION, atomic_torch_save
    from pgov3d_interfaces.srv import Query

    te_cfg = {"random_init": True, "model_cfg": tiny_clip_config(32)}
    model_cfg = resolve_model_config({"preset": "tiny", "in_channels": 3, "out_channels": 32})
    ckpt = atomic_torch_save({
        "format": FORMAT, "version": VERSION, "step": 0, "model": build_model(model_cfg).state_dict(),
        "model_config": model_cfg, "config": {"data": {"voxel_size": 0.05}, "text_encoder": te_cfg},
        "text_encoder": {"identity": TextEncoder(te_cfg).identity, "dim": 32},
    }, tmp_path / "net.pt")
    scene_dir = corridor_scene(tmp_path / "scene", n=3)
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"checkpoint:={ckpt}", "-p", "network_period:=0.3", "-p", "voxel_size:=0.05")
    replay_cmd = replay_command(scene_dir, "--fps", "5")
    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log"):
            node = rclpy.create_node("pgov3d_test_net")
            with running_node(replay_cmd, tmp_path / "replay.log") as replay_proc:
                assert replay_proc.wait(60) == 0
            status_client = node.create_client(Trigger, "/pgov3d/status")

            def status():
                return json.loads(call_service(node, status_client, Trigger.Request()).message)

            assert wait_for(lambda: (s := status())["voxels"] > 0 and s["voxels_with_features"] == s["voxels"],
                            30, node), status()
            res = call_service(node, node.create_client(Query, "/pgov3d/query"),
                               Query.Request(queries=["chair", "wall"], min_score=-1.0))
            final = status()
            node.destroy_node()
    finally:
        rclpy.shutdown()
    log = (tmp_path / "node.log").read_text()
    assert res.success, res.message + log
    assert final["network_passes"] >= 1 and final["frames_integrated"] == 3
    assert res.cloud.width == final["voxels"]  # min_score -1: every voxel gets a label
    assert "query scores will be meaningless" not in log  # the checkpoint's own text encoder was used


def test_bag_replay_builds_the_same_map(tmp_path):
    """A rosbag2 bag (written with rosbags from the scene's frames) replayed into the node gives
    the same map as the scene folder integrated by the core library."""
    import json

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore
    from std_srvs.srv import Trigger

    from pgov3d_ros.conversions import K_to_camera_info, depth_to_image, matrix_to_pose, rgb_to_image

    scene_dir = corridor_scene(tmp_path / "scene", n=4)
    scene = Scene(scene_dir)
    expected = VoxelMap(voxel_size=0.05, max_depth=5.0)
    for frame in scene:
        expected.integrate(frame)
    typestore = get_typestore(Stores.ROS2_KILTED)
    bag = tmp_path / "bag"
    with Writer(bag, version=9) as writer:
        topics = {"color/image": "sensor_msgs/msg/Image", "depth/image": "sensor_msgs/msg/Image",
                  "depth/camera_info": "sensor_msgs/msg/CameraInfo", "pose": "geometry_msgs/msg/PoseStamped"}
        conns = {t: writer.add_connection(t, ty, typestore=typestore) for t, ty in topics.items()}
        for i, frame in enumerate(scene):
            t_ns = 1_000_000_000 + i * 200_000_000
            from builtin_interfaces.msg import Time

            stamp = Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9)
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = stamp, "map"
            matrix_to_pose(frame.pose, pose.pose)
            msgs = {"depth/camera_info": K_to_camera_info(frame.K, frame.width, frame.height, stamp, "cam"),
                    "color/image": rgb_to_image(frame.color, stamp, "cam"), "pose": pose,
                    "depth/image": depth_to_image(frame.depth, stamp, "cam", 1000.0)}
            for topic, msg in msgs.items():
                writer.write(conns[topic], t_ns, serialize_message(msg))
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", "voxel_size:=0.05", "-p", "input_reliability:=reliable")
    replay_cmd = replay_command(bag, "--rate", "1.0")
    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log"):
            node = rclpy.create_node("pgov3d_test_bag")
            client = node.create_client(Trigger, "/pgov3d/status")
            call_service(node, client, Trigger.Request())  # the node is up before the bag plays
            with running_node(replay_cmd, tmp_path / "replay.log") as replay_proc:
                assert replay_proc.wait(60) == 0, (tmp_path / "replay.log").read_text()
            assert wait_for(lambda: json.loads(call_service(node, client, Trigger.Request()).message)[
                "frames_integrated"] == 4, 20, node), (tmp_path / "node.log").read_text()
            status = json.loads(call_service(node, client, Trigger.Request()).message)
            node.destroy_node()
    finally:
        rclpy.shutdown()
    assert status["voxels"] == len(expected)


def test_node_resumes_from_a_saved_map(tmp_path):
    """`initial_map`: the node starts from a saved map (geometry, colours and features) and answers
    queries over it before any frame arrives; a file that is not a map stops it at start-up, naming
    the file."""
    import rclpy
    import torch
    from std_srvs.srv import Trigger

    from pgov3d_interfaces.srv import Query
    from pgov3d_ros.conversions import cloud_to_arrays

    saved = VoxelMap(voxel_size=0.05)
    for frame in Scene(corridor_scene(tmp_path / "scene", n=3)):
        saved.integrate(frame)
    features = torch.randn(len(saved), 32, generator=torch.Generator().manual_seed(0))
    saved.set_features(torch.arange(len(saved)), features)
    path = saved.save(tmp_path / "session.npz")
    params = ["-p", "voxel_size:=0.05", "-p", "pixel_stride:=2", "-p", "text_encoder_random_init:=true",
              "-p", "text_encoder_random_dim:=32", "-p", "network_period:=0.0"]
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"initial_map:={path}", *params)
    rclpy.init()
    try:
        with running_node(cmd, tmp_path / "node.log"):
            node = rclpy.create_node("pgov3d_test_resume")
            status = json.loads(call_service(node, node.create_client(Trigger, "/pgov3d/status"),
                                             Trigger.Request()).message)
            res = call_service(node, node.create_client(Query, "/pgov3d/query"),
                               Query.Request(queries=["wall"], min_score=-1.0))
            node.destroy_node()
    finally:
        rclpy.shutdown()
    log = (tmp_path / "node.log").read_text()
    assert res.success, res.message + log
    assert status["voxels"] == len(saved) and status["voxels_with_features"] == len(saved), status
    cloud = cloud_to_arrays(res.cloud)
    assert res.cloud.width == len(saved)
    got = np.sort(np.stack([cloud["x"], cloud["y"], cloud["z"]], 1), axis=0)
    np.testing.assert_allclose(got, np.sort(saved.voxel_means().numpy(), axis=0), atol=1e-5)

    (tmp_path / "broken.npz").write_bytes(b"not a map")
    bad = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"initial_map:={tmp_path / 'broken.npz'}", *params)
    import subprocess

    done = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "broken.npz" in done.stdout + done.stderr
