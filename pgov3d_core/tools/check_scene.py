"""Sanity-check a canonical scene folder: frames, depth range, intrinsics, pose convention.

    python -m pgov3d_core.tools.check_scene <scene folder> [--depth-scale S] [--png top_down.png]

Pose and intrinsics convention mix-ups are among the most common failures users hit, so besides
the basics this measures, for consecutive frame pairs, how well frame j's back-projected depth
re-projects into frame i under the camera-to-world reading of the poses and under the
world-to-camera reading. The reading under which the frames agree is the scene's convention;
pgov3d expects camera-to-world.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.scene import Scene, SceneError
from pgov3d_core.geometry import backproject, project

log = logging.getLogger(__name__)


@dataclass
class SceneReport:
    root: str
    frames: int
    depth_size: tuple[int, int]
    K_depth: list[list[float]]
    depth_scale: float
    depth_median_m: float
    depth_p5_m: float
    depth_p95_m: float
    valid_depth_fraction: float
    overlap_cam_to_world: float
    overlap_world_to_cam: float
    pairs_checked: int
    likely_convention: str
    warnings: list[str] = field(default_factory=list)


def pair_agreement(frame_i, frame_j, pose_i, pose_j, stride: int = 4) -> float:
    """Fraction of frame j's points that land inside frame i with matching depth (within
    max(5 cm, 5 %)), given the poses to use for each."""
    pts, _ = backproject(frame_j.depth, frame_j.K, pose_j, stride=stride)
    if pts.shape[0] == 0:
        return 0.0
    h, w = frame_i.depth.shape
    u, v, z, inside = project(pts, frame_i.K, pose_i, h, w)
    if not bool(inside.any()):
        return 0.0
    ui = u[inside].round().long().clamp(0, w - 1)
    vi = v[inside].round().long().clamp(0, h - 1)
    d_i = torch.from_numpy(np.ascontiguousarray(frame_i.depth))[vi, ui]
    zi = z[inside]
    ok = (d_i > 0) & torch.isfinite(d_i) & ((d_i - zi).abs() < torch.clamp(0.05 * zi, min=0.05))
    return float(ok.sum()) / pts.shape[0]


def check_scene(root: str | Path, depth_scale: float | None = None, max_pairs: int = 20) -> SceneReport:
    scene = Scene(root, depth_scale=depth_scale)
    n = len(scene)
    step = max(1, (n - 1) // max_pairs) if n > 1 else 1
    depths = []
    c2w, w2c = [], []
    prev = None
    for idx in range(0, n, step):
        frame = scene[idx]
        d = frame.depth[::4, ::4]
        depths.append(d[np.isfinite(d) & (d > 0)])
        if prev is not None:
            c2w.append(pair_agreement(prev, frame, prev.pose, frame.pose))
            w2c.append(pair_agreement(prev, frame, np.linalg.inv(prev.pose), np.linalg.inv(frame.pose)))
        prev = frame
    first = scene[0]
    all_d = np.concatenate(depths) if depths else np.zeros(0)
    h, w = first.depth.shape
    warnings = []
    if all_d.size == 0:
        warnings.append("no valid depth at all")
        med = p5 = p95 = float("nan")
    else:
        med, p5, p95 = (float(np.percentile(all_d, q)) for q in (50, 5, 95))
        if med > 15.0:
            warnings.append(
                f"median depth {med:.1f} m is implausible for an indoor scan: depth_scale "
                f"{scene.meta.depth_scale} is probably too small (TUM uses 5000, ScanNet 1000 per metre)"
            )
        elif med < 0.1:
            warnings.append(f"median depth {med:.3f} m is implausibly small: depth_scale is probably too large")
    K = first.K
    fov_x = float(np.degrees(2 * np.arctan(w / (2 * K[0, 0]))))
    if not 30.0 <= fov_x <= 130.0:
        warnings.append(f"horizontal field of view {fov_x:.0f}° is unusual: are the intrinsics for this resolution?")
    if abs(K[0, 2] - w / 2) > 0.2 * w or abs(K[1, 2] - h / 2) > 0.2 * h:
        warnings.append(
            f"principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is far from the image centre ({w / 2}, {h / 2}): "
            "intrinsics of the colour camera used for depth?"
        )
    o_c2w = float(np.mean(c2w)) if c2w else float("nan")
    o_w2c = float(np.mean(w2c)) if w2c else float("nan")
    if not c2w:
        convention = "unknown (one frame)"
    elif max(o_c2w, o_w2c) < 0.05:
        convention = "unknown (frames do not overlap under either reading)"
        warnings.append("consecutive frames share no geometry under either pose reading: poses or depth are wrong")
    elif o_c2w >= o_w2c:
        convention = "camera-to-world"
    else:
        convention = "world-to-camera"
        warnings.append(
            "poses look like world-to-camera; pgov3d expects camera-to-world: invert them (np.linalg.inv)"
        )
    valid_fraction = float(np.mean(np.isfinite(first.depth) & (first.depth > 0)))
    return SceneReport(
        root=str(root), frames=n, depth_size=(w, h), K_depth=np.round(K, 4).tolist(),
        depth_scale=scene.meta.depth_scale, depth_median_m=med, depth_p5_m=p5, depth_p95_m=p95,
        valid_depth_fraction=valid_fraction, overlap_cam_to_world=o_c2w, overlap_world_to_cam=o_w2c,
        pairs_checked=len(c2w), likely_convention=convention, warnings=warnings,
    )


def render_top_down(root: str | Path, out_png: str | Path, depth_scale: float | None = None,
                    max_frames: int = 50, resolution: float = 0.02) -> Path:
    """A top-down (x-y) image of the back-projected frames, coloured by frame colour."""
    from PIL import Image

    scene = Scene(root, depth_scale=depth_scale)
    step = max(1, len(scene) // max_frames)
    pts, cols = [], []
    for frame in scene.iter_frames(stride=step):
        p, idx = backproject(frame.depth, frame.K, frame.pose, stride=4)
        pts.append(p.numpy())
        cols.append(frame.color.reshape(-1, 3)[idx.numpy()])
    xyz = np.concatenate(pts)
    rgb = np.concatenate(cols)
    lo = xyz[:, :2].min(0)
    ij = ((xyz[:, :2] - lo) / resolution).astype(np.int64)
    wh = ij.max(0) + 1
    img = np.full((wh[1], wh[0], 3), 255, np.uint8)
    order = np.argsort(xyz[:, 2])  # highest point drawn last (seen from above)
    img[wh[1] - 1 - ij[order, 1], ij[order, 0]] = rgb[order]
    Image.fromarray(img).save(out_png)
    return Path(out_png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.check_scene", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", help="canonical scene folder (color/, depth/, pose/, intrinsic/)")
    parser.add_argument("--depth-scale", type=float, default=None,
                        help="depth units per metre (default: the scene's meta.yaml, else 1000)")
    parser.add_argument("--png", default=None, help="also write a top-down view of the back-projected frames")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = check_scene(args.scene, args.depth_scale)
        if args.png:
            render_top_down(args.scene, args.png, args.depth_scale)
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps(asdict(report), indent=2))
    else:
        print(f"scene            {report.root}")
        print(f"frames           {report.frames}   depth {report.depth_size[0]}x{report.depth_size[1]}")
        print(f"intrinsics       fx={report.K_depth[0][0]} fy={report.K_depth[1][1]} "
              f"cx={report.K_depth[0][2]} cy={report.K_depth[1][2]}")
        print(f"depth            scale {report.depth_scale:g}/m   median {report.depth_median_m:.2f} m   "
              f"5–95% {report.depth_p5_m:.2f}–{report.depth_p95_m:.2f} m   valid {report.valid_depth_fraction:.0%}")
        print(f"pose overlap     camera-to-world {report.overlap_cam_to_world:.0%}   "
              f"world-to-camera {report.overlap_world_to_cam:.0%}   ({report.pairs_checked} frame pairs)")
        print(f"convention       {report.likely_convention}")
        for w in report.warnings:
            print(f"WARNING          {w}")
        if args.png:
            print(f"top-down view    {args.png}")
    return 1 if report.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
