"""Benchmarks of the online map (issue: geometry core and VoxelMap).

P1  integrate 640x480 frames at 2 cm into a map already holding >= 1M voxels, beside a bare
    "back-project + torch.unique" baseline on the same frames (goal >= 30 frames/s, >= 0.8x baseline)
P2  query 1M voxels x 512-d fp16 features against 1, 5, 20 texts (goal <= 50 ms p95)
P3  bytes per voxel for geometry + colour + count (goal <= 64 B)

Frames are rendered from the synthetic room generator (real frame statistics, not random depth).
    python bench/bench_map.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pgov3d_core.data.synthetic import SyntheticRoom
from pgov3d_core.geometry import backproject, pack_keys, voxel_coords
from pgov3d_core.map import VoxelMap


def prefill(vmap: VoxelMap, target: int, seed: int = 100) -> None:
    """Fill the map past `target` voxels with dense surface samples of rooms placed side by side."""
    k = 0
    while len(vmap) < target:
        cloud = SyntheticRoom.random(seed + k).sample_cloud(density=5000.0)
        xyz = torch.from_numpy(cloud.xyz) + torch.tensor([15.0 * (k + 1), 0.0, 0.0])
        vmap.integrate_points(xyz, torch.from_numpy(cloud.rgb).float())
        k += 1


def timed(fn, repeats: int) -> np.ndarray:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--voxels", type=int, default=1_000_000, help="map size before timing")
    args = parser.parse_args()
    dev = torch.device(args.device)
    n_frames = 10 if args.quick else 30
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}")

    room = SyntheticRoom.random(0)
    t = time.perf_counter()
    frames = [f for f, _ in room.render_frames(n_frames, 640, 480)]
    print(f"rendered {n_frames} synthetic 640x480 frames in {time.perf_counter() - t:.1f} s")

    vmap = VoxelMap(voxel_size=0.02, max_voxels=4_000_000, device=dev)
    prefill(vmap, args.voxels)
    start_size = len(vmap)

    def integrate_all():
        for f in frames:
            vmap.integrate(f)

    def baseline_all():
        for f in frames:
            depth = torch.from_numpy(f.depth).to(dev)
            pts, _ = backproject(depth, f.K, f.pose)
            torch.unique(pack_keys(voxel_coords(pts, 0.02)), return_inverse=True, return_counts=True)

    baseline_all()  # warm-up
    base = timed(baseline_all, 3).min() / n_frames
    ours = timed(integrate_all, 3).min() / n_frames
    print()
    print("| benchmark | figure | goal |")
    print("| --- | --- | --- |")
    print(f"| P1 integrate 640x480 @2 cm into {start_size / 1e6:.2f}M-voxel map | {1 / ours:.1f} frames/s "
          f"({ours * 1e3:.1f} ms/frame) | >= 30 frames/s |")
    print(f"| P1 baseline back-project + torch.unique | {1 / base:.1f} frames/s ({base * 1e3:.1f} ms/frame) | |")
    print(f"| P1 map / baseline throughput | {base / ours:.2f}x | >= 0.8x |")

    n = 1_000_000
    qmap = VoxelMap(voxel_size=0.02, max_voxels=n, device=dev)
    # 1M distinct voxels (a grid), so the map holds exactly n voxels without eviction.
    grid = torch.stack(torch.meshgrid(*(torch.arange(100),) * 3, indexing="ij"), -1).reshape(-1, 3)
    qmap.integrate_points((grid.float() + 0.5) * 0.02, torch.zeros(n, 3))
    rows = torch.arange(len(qmap))
    qmap.set_features(rows, torch.randn(len(qmap), 512))
    repeats = 5 if args.quick else 20
    for q in (1, 5, 20):
        text = torch.nn.functional.normalize(torch.randn(q, 512), dim=1)
        qmap.query(text)  # warm-up
        times = timed(lambda text=text: qmap.query(text, min_score=0.1), repeats) * 1e3
        print(f"| P2 query {len(qmap) / 1e6:.2f}M voxels x 512 {str(qmap.feature_dtype)[6:]}, {q} text(s) | "
              f"p50 {np.percentile(times, 50):.0f} ms, p95 {np.percentile(times, 95):.0f} ms | <= 50 ms p95 |")
    print(f"| P3 bytes per voxel (geometry + colour + count + index) | {vmap.bytes_per_voxel():.0f} B | <= 64 B |")
    print(f"| P3 bytes per voxel with 512-d 16-bit features | {qmap.bytes_per_voxel(include_features=True):.0f} B | |")


if __name__ == "__main__":
    main()
