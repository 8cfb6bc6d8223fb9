"""End-to-end benchmark of the mapping node over real DDS (issue: ROS 2 online mapping node).

  N1  frames/s integrated by the node from a replay of a 640x480 synthetic scene (as fast as the
      replay can publish), and frames dropped
  N2  /pgov3d/query latency through the service at 100k and 1M voxels with 512-d features
      (min_score 0: every voxel is labelled and returned in the cloud, the worst case)

    python bench/bench_node.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from pgov3d_core.data.synthetic import generate_scene  # noqa: E402
from pgov3d_core.map import VoxelMap  # noqa: E402
from ros_helpers import SHARE, call_service, node_command, running_node  # noqa: E402


def status(node, client):
    from std_srvs.srv import Trigger

    return json.loads(call_service(node, client, Trigger.Request()).message)


def bench_integration(tmp: Path, frames: int, reliability: str) -> None:
    import rclpy
    from std_srvs.srv import Trigger

    scene = tmp / "scene"
    if not scene.exists():
        generate_scene(scene, seed=7, n_frames=frames, width=640, height=480)
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", "map_publish_period:=0.0", "-p", "sync_queue_size:=50",
                       "-p", f"input_reliability:={reliability}")
    with running_node(cmd, tmp / "node.log"):
        node = rclpy.create_node("pgov3d_bench")
        client = node.create_client(Trigger, "/pgov3d/status")
        status(node, client)  # node is up
        replay = node_command("replay", "pgov3d_replay", None)
        replay[1:1] = [str(scene), "--fps", "30", "--rate", "1000"]
        t0 = time.monotonic()
        with running_node(replay, tmp / "replay.log") as proc:
            proc.wait(300)
        t_pub = time.monotonic() - t0 - 1.0  # minus the replay's start and end pauses
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 2.0:
            s = status(node, client)
            if s["frames_integrated"] != last:
                last, stable_since = s["frames_integrated"], time.monotonic()
            time.sleep(0.2)
        node.destroy_node()
    dropped = sum(s["dropped"].values())
    capacity = s["frames_integrated"] / max(s["integration_seconds"], 1e-6)
    print(f"| N1 node, {reliability} input, 640x480 @2 cm: replay published {frames} frames at "
          f"{frames / max(t_pub, 1e-3):.1f} frames/s | {s['frames_integrated']} integrated "
          f"(depth messages received {s['received'].get('depth', 0)}, {dropped} dropped unsynchronised); "
          f"node integration capacity {capacity:.1f} frames/s | |")


def bench_query(tmp: Path, voxels: int, repeats: int) -> None:
    import rclpy

    from pgov3d_interfaces.srv import Query

    side = round(voxels ** (1 / 3)) + 1
    grid = torch.stack(torch.meshgrid(*(torch.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)[:voxels]
    vmap = VoxelMap(voxel_size=0.02, max_voxels=voxels)
    vmap.integrate_points((grid.float() + 0.5) * 0.02, torch.full((len(grid), 3), 128.0))
    vmap.set_features(torch.arange(len(vmap)), torch.randn(len(vmap), 512))
    path = vmap.save(tmp / f"map_{voxels}.npz")
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"initial_map:={path}", "-p", "text_encoder_random_init:=true",
                       "-p", "text_encoder_random_dim:=512", "-p", f"max_voxels:={voxels}")
    with running_node(cmd, tmp / "node_q.log"):
        node = rclpy.create_node("pgov3d_bench_q")
        client = node.create_client(Query, "/pgov3d/query")
        for q in (1, 5):
            texts = ["chair", "table", "sofa", "bed", "lamp"][:q]
            call_service(node, client, Query.Request(queries=texts), timeout=120)  # warm-up, embeds texts
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                res = call_service(node, client, Query.Request(queries=texts, min_score=0.0), timeout=120)
                times.append((time.perf_counter() - t) * 1e3)
            assert res.success, res.message
            print(f"| N2 /pgov3d/query {len(vmap) / 1e6:.2f}M voxels, {q} text(s), {res.cloud.width} points back | "
                  f"p50 {np.percentile(times, 50):.0f} ms, p95 {np.percentile(times, 95):.0f} ms | |")
        node.destroy_node()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import os
    import random

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    rclpy.init()
    print("| benchmark | figure | goal |\n| --- | --- | --- |")
    try:
        with tempfile.TemporaryDirectory() as d:
            for reliability in ("reliable", "best_effort"):
                bench_integration(Path(d), 20 if args.quick else 60, reliability)
            for voxels in (100_000, 1_000_000):
                bench_query(Path(d), voxels, 3 if args.quick else 10)
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
