"""`make demo`: the embedded default, end to end on CPU.

  1. the curriculum (pgov3d_core.tools.run_curriculum) on synthetic rooms: oracle entities → stage 1 (with
     consistency) → stage-2 pseudo-labels → stage 2 → evaluation on held-out rooms (report + PNGs)
  2. the online node with the stage-2 checkpoint: a held-out room is replayed into it, the network
     runs over the map, and /pgov3d/query is asked for the room's classes twice: under their trained
     names and under names that never occurred as a training label (`evaluation.query_texts`);
     per-class precision/recall against the ground truth are printed side by side, the map is
     saved and a PLY coloured by query result written

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
from pgov3d_core.scene_evaluation import query_hit_statistics
from pgov3d_core.training.checkpoint import latest_checkpoint
from pgov3d_core.training.curriculum import RUN_ERRORS, CurriculumOptions, run_curriculum, summary_table

QUICK_OVERRIDES = [  # the smallest end-to-end run (CI keeps it working); numbers are not meaningful
    "data.synthetic.train_seeds=[0]", "data.synthetic.val_seeds=[100]", "data.synthetic.n_frames=6",
    "data.synthetic.width=80", "data.synthetic.height=60", "data.synthetic.density=400",
    "stage1.overrides.train.steps=4", "stage1.overrides.train.ckpt_every=2", "stage1.overrides.train.batch_size=1",
    "stage2.overrides.train.steps=2", "stage2.overrides.train.ckpt_every=1", "stage2.overrides.pseudo.max_passes=2",
]


def _palette(n: int) -> np.ndarray:
    return (np.array([colorsys.hsv_to_rgb(i / max(n, 1), 0.8, 1.0) for i in range(n)]) * 255).astype(np.uint8)


def training_vocabulary(scene_dirs: list[Path]) -> set[str]:
    """Every entity label the training scenes' frames were labelled with (the entity cache)."""
    from pgov3d_core.labelling.entities import read_entity_record

    return {label for d in scene_dirs for fid in Scene(d).frame_ids for label in read_entity_record(d, fid)["labels"]}


def online_step(out: Path, scene_dir: Path, checkpoint: Path, query_sets: dict[str, tuple[list[str], list[str]]],
                log_dir: Path) -> dict:
    """Replay `scene_dir` into the mapping node running `checkpoint`; ask /pgov3d/query once per
    query set (name → (queries, the class each query should find)), so the sets do not compete for
    points; save; statistics per set."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from std_srvs.srv import Trigger

    from pgov3d_interfaces.srv import Query
    from pgov3d_ros.conversions import cloud_to_arrays
    from pgov3d_ros.processes import SHARE, call_service, node_command, replay_command, running_node

    map_path = out / "map.npz"
    cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                       "-p", f"checkpoint:={checkpoint}", "-p", "network_period:=1.0", "-p", "voxel_size:=0.02",
                       "-p", "input_reliability:=reliable", "-p", f"map_save_path:={map_path}")
    replay = replay_command(scene_dir, "--fps", "5")
    with rclpy.init():  # shuts rclpy down however the block ends (as ros2/demos)
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
            query_client = node.create_client(Query, "/pgov3d/query")
            responses = {name: call_service(node, query_client, Query.Request(queries=queries, min_score=0.0),
                                            timeout=120) for name, (queries, _) in query_sets.items()}
            saved = call_service(node, node.create_client(Trigger, "/pgov3d/save_map"), Trigger.Request())
            final = status()
            node.destroy_node()
            if node_proc.poll() is not None:
                raise RuntimeError(f"the mapping node exited; see {log_dir / 'mapping_node.log'}")
    truth = Scene(scene_dir).cloud()
    class_names = Scene(scene_dir).class_names
    hits, best_scores, ply = {}, {}, None
    for name, (queries, classes) in query_sets.items():
        res = responses[name]
        if not res.success:
            raise RuntimeError(f"query failed: {res.message}")
        cloud = cloud_to_arrays(res.cloud)
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
        labels = cloud["label"].astype(np.int64)
        hits[name] = query_hit_statistics(xyz, labels, queries, truth.xyz, truth.labels, class_names,
                                          query_classes=classes)
        best_scores[name] = dict(zip(queries, res.scores, strict=True))
        if ply is None:  # the first set's result: the PLY a user opens
            colours = _palette(len(queries))[labels.clip(0)]
            ply = out / "query_result.ply"
            write_ply_cloud(ply, PointCloud(xyz.astype(np.float32), colours, labels.astype(np.int32)),
                            extra={"score": cloud["score"].astype(np.float32)})
    return {"status": final, "hits": hits, "saved": saved.message, "ply": ply, "map": map_path,
            "best_scores": best_scores}


def _pct(x: float) -> str:
    return "–" if np.isnan(x) else f"{100 * x:.0f}%"


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
    print(f"[1/2] curriculum → {out}  (resumable: re-running skips finished steps)", flush=True)
    try:
        cfg = load_config(args.config, overrides + (QUICK_OVERRIDES if args.quick else []) + args.overrides)
        result = run_curriculum(cfg, CurriculumOptions(resume=True, progress=not args.quick))
    except RUN_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(result), flush=True)

    scene_dir = sorted(Path(cfg["data"]["val_root"]).iterdir())[0]
    truth = Scene(scene_dir).cloud()
    names = Scene(scene_dir).class_names
    present = np.bincount(truth.labels[truth.labels >= 0], minlength=len(names))
    classes = [names[i] for i in np.argsort(-present) if present[i] > 0][:8]
    # Per class a name the network was trained on and one it never saw as a training label (the
    # evaluation's query texts), each set asked on its own so that the two do not compete.
    seen = training_vocabulary(sorted(p for p in Path(cfg["data"]["train_root"]).iterdir() if p.is_dir()))
    unseen_texts = (cfg.get("evaluation") or {}).get("query_texts") or {}
    unseen = {c: unseen_texts[c] for c in classes if c in unseen_texts}
    query_sets = {"trained": (classes, classes), "unseen": (list(unseen.values()), list(unseen))}
    checkpoint = latest_checkpoint(out / "stage2") or latest_checkpoint(out / "stage1")
    print(f"\n[2/2] online: replay {scene_dir.name} into the mapping node ({checkpoint.parent.parent.name} "
          f"checkpoint), query {classes} and {list(unseen.values())}", flush=True)
    online = online_step(out, scene_dir, checkpoint, {k: v for k, v in query_sets.items() if v[0]}, out)
    s = online["status"]
    print(f"      {s['frames_integrated']} frames integrated → {s['voxels']} voxels, {s['network_passes']} network "
          f"passes; {online['saved']}")
    trained_hits = {h.query: h for h in online["hits"]["trained"]}
    unseen_hits = dict(zip(unseen, online["hits"].get("unseen", []), strict=True))
    table = ["| class | trained name | points | precision | recall "
             "| never-trained name | points | precision | recall |", "| --- " * 9 + "|"]
    for c in classes:
        t = trained_hits[c]
        row = f"| {c} | {c}{'' if c in seen else ' (not a training label!)'} | {t.points} | {_pct(t.precision)} | " \
              f"{_pct(t.recall)} |"
        if c in unseen_hits:
            u = unseen_hits[c]
            row += f" {u.query}{' (a training label!)' if u.query in seen else ''} | {u.points} | " \
                   f"{_pct(u.precision)} | {_pct(u.recall)} |"
        else:
            row += " – | | | |"
        table.append(row)
    online_md = out / "online.md"
    online_md.write_text(f"Held-out room {scene_dir.name}: {s['frames_integrated']} frames → {s['voxels']} voxels; "
                         f"queries through /pgov3d/query (min_score 0), the trained names in one request and the "
                         f"never-trained names (no training frame was labelled with them; {len(seen)} training "
                         f"labels in all) in another.\n\n" + "\n".join(table) + "\n")
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
