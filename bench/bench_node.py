"""End-to-end benchmark of the mapping node over real DDS.

  N1  640x480 frames integrated by the node at 15 and 30 Hz, from a publisher with a camera
      driver's defaults (sensor-data QoS: best effort, depth 5) and from the replay tool
      (reliable), network pass off; received / synchronised / integrated / dropped by reason,
      beside the core's own integration ceiling measured in the same run on the same frames
  N2  ~/query latency through the service at 100k and 1M voxels with 512-d features
      (min_score 0: every voxel is labelled and returned in the cloud, the worst case)

    python bench/bench_node.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.scene import Scene
from pgov3d_core.data.synthetic import generate_scene
from pgov3d_core.map import VoxelMap
from pgov3d_core.query_kernels import cpu_summary
from pgov3d_ros.processes import SHARE, call_service, node_command, running_node


def status(node, client):
    from std_srvs.srv import Trigger

    return json.loads(call_service(node, client, Trigger.Request()).message)


def node_torch_threads() -> int:
    """The node's torch thread count: its declared default, which config/mapping.yaml ships (a test
    holds the two equal). Every core reference runs with it, so a node/core ratio measures what the
    node adds, not a thread-count difference (at 1M voxels the core query alone is ~1.6x faster on 2
    threads than on 1). Imported here, not at module level: mapping_node imports rclpy, and main()
    sets the DDS transport first."""
    from pgov3d_ros.mapping_node import PARAMETERS

    return int(PARAMETERS["torch_threads"][0])


@contextlib.contextmanager
def torch_threads(n: int):
    """Torch intra-op threads `n` inside the block; 0 keeps torch's default, as the node does."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def core_ceiling(scene: Path) -> float:
    """Frames/s of VoxelMap.integrate alone on the scene's frames (decoded beforehand), with the
    node's torch thread count."""
    frames = list(Scene(scene))
    vmap = VoxelMap(voxel_size=0.02, max_depth=5.0)
    with torch_threads(node_torch_threads()):
        vmap.integrate(frames[0])  # warm-up
        t = time.perf_counter()
        for f in frames:
            vmap.integrate(f)
        return len(frames) / (time.perf_counter() - t)


def camera_publisher(scene: Path, hz: float, frames: int) -> None:
    """A camera driver stand-in (its own process): sensor-data QoS, every message built
    beforehand, published at `hz` with fresh stamps; waits for the node's subscriptions."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from pgov3d_ros.conversions import K_to_camera_info, depth_to_image, matrix_to_pose, rgb_to_image
    from pgov3d_ros.transport import use_package_transport

    use_package_transport()
    rclpy.init()
    node = rclpy.create_node("camera_stand_in")
    pubs = {t: node.create_publisher(m, t, qos_profile_sensor_data) for t, m in
            (("color/image", Image), ("depth/image", Image), ("depth/camera_info", CameraInfo), ("pose", PoseStamped))}
    src = list(Scene(scene))
    msgs = []
    for f in src:
        pose = PoseStamped()
        pose.header.frame_id = "map"
        matrix_to_pose(f.pose, pose.pose)
        msgs.append((K_to_camera_info(f.K, f.width, f.height, None, "cam"), rgb_to_image(f.color, None, "cam"), pose,
                     depth_to_image(f.depth, None, "cam", 1000.0)))
    deadline = time.monotonic() + 20
    while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.monotonic()
    for k in range(frames):
        ahead = t0 + k / hz - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        stamp = node.get_clock().now().to_msg()
        info, color, pose, depth = msgs[k % len(msgs)]
        for msg, topic in ((info, "depth/camera_info"), (color, "color/image"), (pose, "pose"), (depth, "depth/image")):
            msg.header.stamp = stamp
            pubs[topic].publish(msg)
    rate = frames / (time.monotonic() - t0)
    time.sleep(1.0)  # best effort: no acknowledgements to wait for
    print(f"published {frames} frames at {rate:.1f} Hz", flush=True)
    node.destroy_node()
    rclpy.shutdown()


def bench_integration(tmp: Path, scene: Path, frames: int, hz: float, source: str, ceiling: float) -> None:
    import rclpy
    from std_srvs.srv import Trigger

    reliability = "reliable" if source == "replay" else "best_effort"
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", "map_publish_period:=0.0", "-p", "network_period:=0.0",
                       "-p", f"input_reliability:={reliability}", "-p", f"torch_threads:={node_torch_threads()}")
    with running_node(cmd, tmp / f"node_{source}_{hz:g}.log"):
        node = rclpy.create_node("pgov3d_bench")
        client = node.create_client(Trigger, "/pgov3d/status")
        status(node, client)  # node is up
        if source == "replay":
            pub = node_command("replay", "pgov3d_replay", None)
            pub[1:1] = [str(scene), "--fps", f"{hz:g}", "--max-frames", str(frames), "--loop", "0"]
        else:
            pub = [sys.executable, __file__, "--camera", str(scene), f"{hz:g}", str(frames)]
        with running_node(pub, tmp / f"pub_{source}_{hz:g}.log") as proc:
            proc.wait(300)
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 2.0:
            s = status(node, client)
            if s["frames_integrated"] + sum(s["dropped"].values()) != last:
                last, stable_since = s["frames_integrated"] + sum(s["dropped"].values()), time.monotonic()
            time.sleep(0.2)
        node.destroy_node()
    pub_log = (tmp / f"pub_{source}_{hz:g}.log").read_text()
    rate = next((ln.split(" at ")[1].split()[0] for ln in pub_log.splitlines()
                 if ("published" in ln or "replayed" in ln) and " at " in ln), "?")
    if source == "replay":
        rate = next((ln.rsplit("(", 1)[1].split()[0] for ln in pub_log.splitlines() if "frames/s)" in ln), "?")
    drops = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())) or "none"
    share = s["frames_integrated"] / frames
    effective = s["frames_integrated"] * hz / frames  # frames/s integrated over the publishing time
    if hz <= 15:
        goal, met = "≥ 99% integrated", share >= 0.99
    elif ceiling > 35:
        goal, met = "≥ 95% integrated", share >= 0.95
    else:
        # The node can integrate no faster than frames arrive: the target is the slower of the two.
        target = 0.9 * min(hz, ceiling)
        goal, met = f"≥ 90% of min(send rate, core ceiling) ({target:.1f} frames/s)", effective >= target
    print(f"| N1 {source} ({reliability}) {hz:g} Hz, {frames} frames 640x480 (sent at {rate} Hz) | "
          f"received depth {s['received'].get('depth', 0)} / colour {s['received'].get('color', 0)} / pose "
          f"{s['received'].get('pose', 0)}; synchronised {s['frames_synchronised']}; **integrated "
          f"{s['frames_integrated']} ({share:.0%}, {effective:.1f} frames/s)**; dropped: {drops}; core ceiling "
          f"{ceiling:.1f} frames/s | {goal}: {'met' if met else 'MISSED'} |", flush=True)


QUERY_TEXTS = ["chair", "table", "sofa", "bed", "lamp"]


def timed_ms(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def bench_query(tmp: Path, voxels: int, repeats: int) -> None:
    import rclpy
    from std_msgs.msg import Header

    from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config
    from pgov3d_core.online import OnlineMapper
    from pgov3d_interfaces.srv import Query
    from pgov3d_ros.conversions import points_to_cloud

    threads = node_torch_threads()
    side = round(voxels ** (1 / 3)) + 1
    grid = torch.stack(torch.meshgrid(*(torch.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)[:voxels]
    vmap = VoxelMap(voxel_size=0.02, max_voxels=voxels)
    vmap.integrate_points((grid.float() + 0.5) * 0.02, torch.full((len(grid), 3), 128.0))
    vmap.set_features(torch.arange(len(vmap)), torch.randn(len(vmap), 512))
    path = vmap.save(tmp / f"map_{voxels}.npz")
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"initial_map:={path}", "-p", "text_encoder_random_init:=true",
                       "-p", "text_encoder_random_dim:=512", "-p", f"max_voxels:={voxels}",
                       "-p", "network_period:=0.0", "-p", f"torch_threads:={threads}")
    # The core's share, in the same run on the same map file and thread count: OnlineMapper.query
    # (text encoding, the map query, the selection of labelled points) plus the PointCloud2 build.
    mapper = OnlineMapper(VoxelMap.load(path), text_encoder=TextEncoder(
        {"backend": "open_clip", "random_init": True, "model_cfg": tiny_clip_config(512), "device": "cpu"}))

    def core_query(texts):
        with torch_threads(threads):
            answer = mapper.query(texts, 0.0)
        return points_to_cloud(answer.xyz, answer.rgb, Header(frame_id="map"), label=answer.labels,
                               score=answer.scores)

    with running_node(cmd, tmp / "node_q.log"):
        node = rclpy.create_node("pgov3d_bench_q")
        client = node.create_client(Query, "/pgov3d/query")
        for q in (1, 5):
            texts = QUERY_TEXTS[:q]
            core_query(texts)  # warm-up: kernel choice, text embedding
            call_service(node, client, Query.Request(queries=texts), timeout=120)  # the node's warm-up
            # Core and node alternate call by call, so both see the same machine: on shared cores
            # the core's own time drifts 1.5-2x between runs minutes apart.
            core_times, node_times, answers = [], [], []
            for _ in range(repeats):
                core_times += timed_ms(lambda texts=texts: core_query(texts), 1)
                node_times += timed_ms(lambda texts=texts, answers=answers: answers.append(
                    call_service(node, client, Query.Request(queries=texts, min_score=0.0), timeout=120)), 1)
                time.sleep(0.3)  # the node publishes ~/query_cloud after the reply: let it finish first
            res = answers[-1]
            assert res.success, res.message
            core_ms = float(np.percentile(core_times, 50))
            print(f"| N2 core: OnlineMapper.query + PointCloud2 build, {len(mapper.map) / 1e6:.2f}M voxels, "
                  f"{q} text(s), {threads or torch.get_num_threads()} torch thread(s) like the node | "
                  f"p50 {core_ms:.0f} ms | reference |", flush=True)
            p95 = np.percentile(node_times, 95)
            goal = "≤ 2x core" + (f": {'met' if p95 <= 2 * core_ms else 'MISSED'}" if voxels >= 1_000_000 else "")
            print(f"| N2 /pgov3d/query {len(vmap) / 1e6:.2f}M voxels, {q} text(s), {res.cloud.width} points back | "
                  f"p50 {np.percentile(node_times, 50):.0f} ms, p95 {p95:.0f} ms = **{p95 / core_ms:.2f}x core** | "
                  f"{goal} |", flush=True)
        node.destroy_node()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--camera", nargs=3, metavar=("SCENE", "HZ", "FRAMES"), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["N1", "N2"], default=None)
    args = parser.parse_args()
    if args.camera:
        camera_publisher(Path(args.camera[0]), float(args.camera[1]), int(args.camera[2]))
        return
    import random

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from pgov3d_ros.transport import use_package_transport

    use_package_transport()
    import rclpy

    print(cpu_summary())
    rclpy.init()
    print("| benchmark | figure | goal |\n| --- | --- | --- |")
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            if args.only in (None, "N1"):
                scene = tmp / "scene"
                generate_scene(scene, seed=7, n_frames=30, width=640, height=480)
                ceiling = core_ceiling(scene)
                n = 60 if args.quick else 300
                for source in ("camera", "replay"):
                    for hz in (15.0, 30.0):
                        bench_integration(tmp, scene, n, hz, source, ceiling)
            if args.only in (None, "N2"):
                for voxels in (100_000, 1_000_000):
                    bench_query(tmp, voxels, 5 if args.quick else 15)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
