"""`make demo`: the embedded default, end to end on CPU.

Steps (each skipped when its output exists):
  1. generate synthetic labelled rooms (train seeds and one held-out seed)
  2. sanity-check the held-out scene (pose convention, depth scale)
  3. map the held-out scene frame by frame into a VoxelMap; save it and a coloured PLY

    python -m pgov3d_core.demo [--out outputs/demo] [--frames 20] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pgov3d_core.data.scene import PointCloud, Scene, write_ply_cloud
from pgov3d_core.data.synthetic import generate_dataset
from pgov3d_core.map import VoxelMap
from pgov3d_core.tools.check_scene import check_scene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgov3d_core.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument("--train-scenes", type=int, default=3, help="number of training rooms")
    parser.add_argument("--frames", type=int, default=20, help="frames per room")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    scenes = args.out / "scenes"
    held_out_seed = 1000
    print(f"[1/3] synthetic rooms → {scenes}")
    kw = dict(n_frames=args.frames, width=args.width, height=args.height)
    train = generate_dataset(scenes / "train", range(args.train_scenes), **kw)
    held_out = generate_dataset(scenes / "val", [held_out_seed], **kw)[0]
    print(f"      {len(train)} training rooms, held-out room {held_out.name}")

    print(f"[2/3] check_scene {held_out}")
    report = check_scene(held_out)
    print(f"      {report.frames} frames, depth median {report.depth_median_m:.2f} m, "
          f"poses {report.likely_convention} (overlap {report.overlap_cam_to_world:.0%}), "
          f"{'no warnings' if not report.warnings else '; '.join(report.warnings)}")

    print("[3/3] online map of the held-out room")
    scene = Scene(held_out)
    vmap = VoxelMap(voxel_size=0.02)
    t = time.monotonic()
    for frame in scene:
        vmap.integrate(frame)
    dt = time.monotonic() - t
    map_path = vmap.save(args.out / "map.npz")
    ply = args.out / "map.ply"
    write_ply_cloud(ply, PointCloud(vmap.points().numpy(), vmap.colors().numpy(), np.full(len(vmap), -1, np.int32)))
    print(f"      {len(scene)} frames → {len(vmap)} voxels at 2 cm in {dt:.1f} s ({len(scene) / dt:.1f} frames/s)")

    print(f"\ndone in {time.monotonic() - t0:.0f} s. Outputs:")
    print(f"  scenes        {scenes}  (canonical folders: color/ depth/ pose/ intrinsic/ label/ scene.ply)")
    print(f"  map           {map_path}  (VoxelMap.load)")
    print(f"  coloured PLY  {ply}  (open in MeshLab/CloudCompare/Open3D)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
