"""Soak: the node mapping a looping replay at 15 Hz with the network pass on, for minutes.

  S1  RSS of the node process and map size over time (flat once the voxel cap is reached), and
      frames integrated vs published, network passes, drops by reason.

    python bench/bench_soak.py [--minutes 10] [--quick]   (not part of CI; --quick: 1 minute)

The scene is a synthetic 320x240 room; the 3D network is a random-weight `tiny` U-Net checkpoint
(its cost, not its answers, is what a soak needs), with a voxel cap small enough that eviction
runs during the soak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from bench_node import status  # the sibling script (its folder is on sys.path when run)

from pgov3d_core.data.synthetic import generate_scene
from pgov3d_core.query_kernels import cpu_summary
from pgov3d_ros.processes import SHARE, node_command, running_node


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tiny_checkpoint(path: Path) -> Path:
    from pgov3d_core.labelling.text_encoder import TextEncoder
    from pgov3d_core.models import build_model, resolve_model_config
    from pgov3d_core.training.checkpoint import FORMAT, VERSION, atomic_torch_save

    te_cfg = {"backend": "sentence"}
    encoder = TextEncoder(te_cfg)
    model_cfg = resolve_model_config({"preset": "tiny", "in_channels": 3, "out_channels": int(encoder.dim)})
    return atomic_torch_save({
        "format": FORMAT, "version": VERSION, "step": 0, "model": build_model(model_cfg).state_dict(),
        "model_config": model_cfg, "config": {"data": {"voxel_size": 0.05}, "text_encoder": te_cfg},
        "text_encoder": {"identity": encoder.identity, "dim": int(encoder.dim)},
    }, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="one minute")
    args = parser.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from pgov3d_ros.transport import use_package_transport

    use_package_transport()
    import rclpy
    from std_srvs.srv import Trigger

    print(cpu_summary())
    hz, cap = 15.0, 150_000
    rclpy.init()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            scene = generate_scene(tmp / "scene", seed=11, n_frames=60, width=320, height=240)
            ckpt = tiny_checkpoint(tmp / "net.pt")
            cmd = node_command("mapping_node", "pgov3d", SHARE / "config" / "mapping.yaml",
                               "-p", f"checkpoint:={ckpt}", "-p", "network_period:=2.0",
                               "-p", f"max_voxels:={cap}", "-p", "network_voxel_budget:=50000",
                               "-p", "map_publish_period:=1.0")
            with running_node(cmd, tmp / "node.log") as node_proc:
                node = rclpy.create_node("pgov3d_soak")
                client = node.create_client(Trigger, "/pgov3d/status")
                status(node, client)
                frames = int(minutes * 60 * hz)
                replay = node_command("replay", "pgov3d_replay", None)
                replay[1:1] = [str(scene), "--fps", f"{hz:g}", "--loop", "0", "--max-frames", str(frames)]
                samples = []
                print("\n| minute | node RSS (MB) | voxels | frames integrated | network passes | dropped |\n"
                      "| --- | --- | --- | --- | --- | --- |", flush=True)
                with running_node(replay, tmp / "replay.log") as rp:
                    t0 = time.monotonic()
                    next_sample = 0.0
                    while rp.poll() is None:
                        if time.monotonic() - t0 >= next_sample:
                            s = status(node, client)
                            samples.append((time.monotonic() - t0, rss_mb(node_proc.pid), s))
                            print(f"| {samples[-1][0] / 60:.1f} | {samples[-1][1]:.0f} | {s['voxels']} | "
                                  f"{s['frames_integrated']} | {s['network_passes']} | "
                                  f"{sum(s['dropped'].values())} |", flush=True)
                            next_sample += 30.0
                        time.sleep(0.5)
                time.sleep(3.0)
                s = status(node, client)
                node.destroy_node()
        rss = [r for _, r, _ in samples]
        half = rss[len(rss) // 2:] or rss
        print(f"\n| S1 soak {minutes:g} min, 320x240 @ {hz:g} Hz looping, network pass every 2 s, cap {cap} voxels | "
              f"published {frames}, integrated {s['frames_integrated']} ({s['frames_integrated'] / frames:.1%}); "
              f"dropped {json.dumps(s['dropped'])}; {s['network_passes']} network passes; map {s['voxels']} voxels "
              f"(cap {cap}); node RSS {rss[0]:.0f} → {rss[-1]:.0f} MB (second half: {min(half):.0f}–{max(half):.0f} "
              f"MB) | flat RSS and map under the cap |")
    finally:
        rclpy.shutdown()


if __name__ == "__main__":
    main()
