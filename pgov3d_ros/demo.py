"""`make demo`: the embedded default, end to end on CPU.

  1. the curriculum (training/run_curriculum.py) on synthetic rooms: oracle entities → stage 1 (with
     consistency) → stage-2 pseudo-labels → stage 2 → evaluation on held-out rooms (report + PNGs)
  2. the online node with the stage-2 checkpoint: a held-out room is replayed into it, the network
     runs over the map, and /pgov3d/query is asked for the room's classes; per-query hit statistics
     against the ground truth are printed, the map is saved and a PLY coloured by query result written

    python -m pgov3d_ros.demo [--config config/curriculum.yaml] [--out outputs/demo] [--quick] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from pgov3d_core.config import load_config
from pgov3d_core.data.scene import PointCloud, Scene, write_ply_cloud
from pgov3d_core.evaluation import query_hit_statistics
from pgov3d_core.training.checkpoint import latest_checkpoint
from pgov3d_core.training.curriculum import CurriculumOptions, run_curriculum, summary_table

QUICK_OVERRIDES = [  # the smallest end-to-end run (CI keeps it working); numbers are not meaningful
    "data.synthetic.train_seeds=[0]", "data.synthetic.val_seeds=[100]", "data.synthetic.n_frames=6",
    "data.synthetic.width=80", "data.synthetic.height=60", "data.synthetic.density=400",
    "stage1.overrides.train.steps=4", "stage1.overrides.train.ckpt_every=2", "stage1.overrides.train.batch_size=1",
    "stage2.overrides.train.steps=2", "stage2.overrides.train.ckpt_every=1", "stage2.overrides.pseudo.max_passes=2",
]


def _palette(n: int) -> np.ndarray:
    return (np.array([colorsys.hsv_to_rgb(i / max(n, 1), 0.8, 1.0) for i in range(n)]) * 255).astype(np.uint8)


def online_step(out: Path, scene_dir: Path, checkpoint: Path, queries: list[str], log_dir: Path) -> dict:
    """Replay `scene_dir` into the mapping node running `checkpoint`; query; save; statistics."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from std_srvs.srv import Trigger

    from pgov3d_interfaces.srv import Query
    from pgov3d_ros.conversions import cloud_to_arrays
    from pgov3d_ros.processes import SHARE, call_service, node_command, running_node

    map_path = out / "map.npz"
    cmd = node_command("mapping_node", "pgov3d_mapping", SHARE / "config" / "mapping.yaml",
                       "-p", f"checkpoint:={checkpoint}", "-p", "network_period:=1.0", "-p", "voxel_size:=0.02",
                       "-p", "input_reliability:=reliable", "-p", f"map_save_path:={map_path}")
    replay = node_command("replay", "pgov3d_replay", None)
    replay[1:1] = [str(scene_dir), "--fps", "5"]
    rclpy.init()
    try:
        with running_node(cmd, log_dir / "mapping_node.log") as node_proc:
            node = rclpy.create_node("pgov3d_demo")
            status_client = node.create_client(Trigger, "/pgov3d/status")

            def status() -> dict:
                return json.loads(call_service(node, status_client, Trigger.Request(), timeout=60).message)

            status()
            with running_node(replay, log_dir / "replay.log") as rp:
                rp.wait(600)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # until the network has covered the whole map
                s = status()
                if s["voxels"] and s["voxels_with_features"] == s["voxels"]:
                    break
                time.sleep(0.5)
            res = call_service(node, node.create_client(Query, "/pgov3d/query"),
                               Query.Request(queries=queries, min_score=0.0), timeout=120)
            saved = call_service(node, node.create_client(Trigger, "/pgov3d/save_map"), Trigger.Request())
            final = status()
            node.destroy_node()
            if node_proc.poll() is not None:
                raise RuntimeError(f"the mapping node exited; see {log_dir / 'mapping_node.log'}")
    finally:
        rclpy.shutdown()
    if not res.success:
        raise RuntimeError(f"query failed: {res.message}")
    cloud = cloud_to_arrays(res.cloud)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    labels = cloud["label"].astype(np.int64)
    truth = Scene(scene_dir).cloud()
    hits = query_hit_statistics(xyz, labels, queries, truth.xyz, truth.labels, Scene(scene_dir).class_names)
    colours = _palette(len(queries))[labels.clip(0)]
    ply = out / "query_result.ply"
    write_ply_cloud(ply, PointCloud(xyz.astype(np.float32), colours, labels.astype(np.int32)),
                    extra={"score": cloud["score"].astype(np.float32)})
    return {"status": final, "hits": hits, "saved": saved.message, "ply": ply, "map": map_path,
            "best_scores": dict(zip(queries, res.scores, strict=True))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgov3d_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/curriculum.yaml")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--quick", action="store_true", help="smallest sizes (a smoke run, as CI does)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    out = args.out.resolve()
    overrides = [f"run_dir={out}", f"data.train_root={out}/scenes/train", f"data.val_root={out}/scenes/val"]
    cfg = load_config(args.config, overrides + (QUICK_OVERRIDES if args.quick else []) + args.overrides)

    print(f"[1/2] curriculum → {out}  (resumable: re-running skips finished steps)", flush=True)
    result = run_curriculum(cfg, CurriculumOptions(resume=True, progress=not args.quick))
    print(summary_table(result), flush=True)

    scene_dir = sorted(Path(cfg["data"]["val_root"]).iterdir())[0]
    truth = Scene(scene_dir).cloud()
    names = Scene(scene_dir).class_names
    present = np.bincount(truth.labels[truth.labels >= 0], minlength=len(names))
    queries = [names[i] for i in np.argsort(-present) if present[i] > 0][:8]
    checkpoint = latest_checkpoint(out / "stage2") or latest_checkpoint(out / "stage1")
    print(f"\n[2/2] online: replay {scene_dir.name} into the mapping node ({checkpoint.parent.parent.name} "
          f"checkpoint), query {queries}", flush=True)
    online = online_step(out, scene_dir, checkpoint, queries, out)
    s = online["status"]
    print(f"      {s['frames_integrated']} frames integrated → {s['voxels']} voxels, {s['network_passes']} network "
          f"passes; {online['saved']}")
    table = ["| query | map points | precision | recall | best score |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {h.query} | {h.points} | {100 * h.precision:.0f}% | {100 * h.recall:.0f}% | "
              f"{online['best_scores'][h.query]:.2f} |" for h in online["hits"]]
    online_md = out / "online.md"
    online_md.write_text(f"Held-out room {scene_dir.name}: {s['frames_integrated']} frames → {s['voxels']} voxels; "
                         f"queries through /pgov3d/query (min_score 0).\n\n" + "\n".join(table) + "\n")
    print("\n" + "\n".join(table))
    print(f"\ndone in {time.monotonic() - t0:.0f} s. Where everything is:")
    print(f"  report        {result.report['markdown']}  (+ per_class_iou.png, top_down_*.png beside it)")
    print(f"  checkpoints   {out}/stage1/checkpoints, {out}/stage2/checkpoints")
    print(f"  TensorBoard   .venv/bin/tensorboard --logdir {out}")
    print(f"  saved map     {online['map']}  (VoxelMap.load, or the node's initial_map parameter)")
    print(f"  query table   {online_md}")
    print(f"  query PLY     {online['ply']}  (coloured by query; open in MeshLab / CloudCompare / Open3D)")
    print(f"  node log      {out}/mapping_node.log")
    print("  RViz (real ROS 2 install): ros2 launch pgov3d_ros mapping.launch.py rviz:=true "
          f"config:=<your mapping.yaml with checkpoint: {checkpoint}>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
