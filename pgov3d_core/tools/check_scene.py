"""Sanity-check a canonical scene folder: frames, depth range, intrinsics, pose convention.

    python -m pgov3d_core.tools.check_scene <scene folder> [--depth-scale S] [--png top_down.png]

Depth scale, pose convention and intrinsics mix-ups are the most common failures users hit, and
each looks like the others ("the map is a mess"). So besides the basics this re-projects frame
j's back-projected depth into frame i, for pairs of nearby frames, under every reading: the usual
depth scales (1000, 5000, 4000, and ten times off either way) × camera-to-world or
world-to-camera poses × the intrinsics as given or rescaled from the resolution their principal
point implies. The diagnosis names what the best reading changes — only when it is clearly better
than the scene as given, and "cannot tell" when two different fixes explain the frames equally
well. pgov3d expects camera-to-world poses.
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
class Hypothesis:
    """One reading of the scene: a depth scale, a pose convention and a set of intrinsics."""

    depth_scale: float
    convention: str  # "camera-to-world" | "world-to-camera"
    intrinsics: str  # "as given" | "rescaled to WxH"
    agreement: float  # mean fraction of points that frame pairs agree on under this reading


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
    overlap_cam_to_world: float  # agreement of the scene as given (its depth scale and intrinsics)
    overlap_world_to_cam: float  # the same with every pose inverted
    pairs_checked: int
    likely_convention: str
    # What is wrong, by evidence: "ok", "depth scale", "pose convention", "intrinsics" (several
    # joined with " + "), "frames do not overlap", "cannot tell" or "one frame".
    diagnosis: str = "ok"
    suggested_depth_scale: float | None = None
    hypotheses: list[Hypothesis] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Depth agreement tolerance, relative to depth only: an absolute floor (say 5 cm) would let a
# depth scale 10x too large pass, since its depths (0.3 m) are then mostly within the floor.
DEPTH_TOLERANCE = 0.03
USUAL_DEPTH_SCALES = (1000.0, 5000.0, 4000.0)  # ScanNet/SUN3D/Redwood mm, TUM, RealSense L515-like units
MIN_AGREEMENT = 0.05  # below it no reading explains the frames
# A reading other than the given one is reported only when it is clearly better: by this much
# (absolute) and by this factor. Otherwise the data cannot tell them apart.
MARGIN_ABS, MARGIN_RATIO = 0.08, 1.25


def pair_agreement(frame_i, frame_j, pose_i, pose_j, stride: int = 4, depth_factor: float = 1.0,
                   K=None) -> float:
    """Fraction of frame j's points that land inside frame i with matching depth (within
    DEPTH_TOLERANCE of it), given the poses to use for each, both depths multiplied by
    `depth_factor` and intrinsics `K` (default: the frames' own)."""
    K_i = frame_i.K if K is None else K
    K_j = frame_j.K if K is None else K
    pts, _ = backproject(frame_j.depth * depth_factor, K_j, pose_j, stride=stride)
    if pts.shape[0] == 0:
        return 0.0
    h, w = frame_i.depth.shape
    u, v, z, inside = project(pts, K_i, pose_i, h, w)
    if not bool(inside.any()):
        return 0.0
    ui = u[inside].round().long().clamp(0, w - 1)
    vi = v[inside].round().long().clamp(0, h - 1)
    d_i = torch.from_numpy(np.ascontiguousarray(frame_i.depth * depth_factor, dtype=np.float32))[vi, ui]
    zi = z[inside]
    ok = (d_i > 0) & torch.isfinite(d_i) & ((d_i - zi).abs() < DEPTH_TOLERANCE * zi)
    return float(ok.sum()) / pts.shape[0]


INDOOR_MEDIAN_DEPTH = (0.1, 15.0)  # metres: what a scale may make the median depth of an indoor scan


def _candidate_scales(scale: float, median_depth: float = float("nan")) -> list[float]:
    """The scene's depth scale, then those of the usual dataset scales and ten times off either
    way that give indoor depths (geometry alone often cannot rule out a far-away scene: distant
    points barely move between frames, so a too-far reading can agree as well as the true one)."""
    out = [float(scale)]
    lo, hi = INDOOR_MEDIAN_DEPTH
    for s in (*USUAL_DEPTH_SCALES, scale / 10.0, scale * 10.0):
        plausible = not np.isfinite(median_depth) or lo <= median_depth * scale / s <= hi
        if plausible and all(abs(s - o) > 1e-6 * o for o in out):
            out.append(float(s))
    return out


def _candidate_intrinsics(K: np.ndarray, w: int, h: int) -> list[tuple[str, np.ndarray]]:
    """The given K and, when its principal point says it was calibrated at another resolution,
    K rescaled to this image size (intrinsics of the colour camera or of the full-size image)."""
    out = [("as given", K)]
    if K[0, 2] <= 0 or K[1, 2] <= 0:
        return out
    # The resolution whose centre the principal point is, rounded to a multiple of 8 (as sensor
    # modes are: 640x480, 1280x720, 848x480, 1920x1080).
    W, H = (max(8, 8 * round((2 * c + 1) / 8)) for c in (K[0, 2], K[1, 2]))
    if abs(W / w - 1) > 0.15 or abs(H / h - 1) > 0.15:
        K2 = K.copy()
        K2[0] *= w / W
        K2[1] *= h / H
        out.append((f"rescaled from {W}x{H}", K2))
    return out


def _pairs(n: int, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive pairs of the sampled frames, then pairs two apart (longer baselines make the
    depth scale observable: a pure rotation agrees under any scale)."""
    pairs = [(k, k + 1) for k in range(n - 1)] + [(k, k + 2) for k in range(n - 2)]
    return pairs[:max_pairs]


def diagnose(frames: list, scale: float, max_pairs: int = 40,
             median_depth: float = float("nan")) -> tuple[list[Hypothesis], list[int]]:
    """Agreement of every reading (depth scale × pose convention × intrinsics) over frame pairs;
    pairs that no reading explains (no shared view) are left out of the means. Returns the
    hypotheses (best first) and the number of informative pairs."""
    h, w = frames[0].depth.shape
    readings = [(s, conv, kname, K) for s in _candidate_scales(scale, median_depth)
                for conv in ("camera-to-world", "world-to-camera")
                for kname, K in _candidate_intrinsics(frames[0].K, w, h)]
    scores = np.zeros((len(readings), 0))
    for i, j in _pairs(len(frames), max_pairs):
        a, b = frames[i], frames[j]
        col = []
        for s, conv, _, K in readings:
            pose_a, pose_b = (a.pose, b.pose) if conv == "camera-to-world" else (np.linalg.inv(a.pose),
                                                                                  np.linalg.inv(b.pose))
            col.append(pair_agreement(a, b, pose_a, pose_b, depth_factor=scale / s, K=K))
        scores = np.concatenate([scores, np.array(col)[:, None]], axis=1)
    informative = scores.max(0) >= MIN_AGREEMENT if scores.shape[1] else np.zeros(0, bool)
    use = scores[:, informative] if informative.any() else scores
    means = use.mean(1) if use.shape[1] else np.zeros(len(readings))
    hyps = [Hypothesis(s, conv, kname, float(m)) for (s, conv, kname, _), m in zip(readings, means, strict=True)]
    return hyps, [int(scores.shape[1]), int(informative.sum())]


def _changes(h: Hypothesis, given: Hypothesis) -> list[str]:
    out = []
    if abs(h.depth_scale - given.depth_scale) > 1e-6 * given.depth_scale:
        out.append("depth scale")
    if h.convention != given.convention:
        out.append("pose convention")
    if h.intrinsics != given.intrinsics:
        out.append("intrinsics")
    return out


def _clearly_better(a: float, b: float) -> bool:
    return a - b >= MARGIN_ABS and a >= MARGIN_RATIO * b


def check_scene(root: str | Path, depth_scale: float | None = None, max_pairs: int = 20) -> SceneReport:
    scene = Scene(root, depth_scale=depth_scale)
    n = len(scene)
    step = max(1, (n - 1) // max_pairs) if n > 1 else 1
    frames = [scene[idx] for idx in range(0, n, step)]
    depths = [f.depth[::4, ::4][np.isfinite(f.depth[::4, ::4]) & (f.depth[::4, ::4] > 0)] for f in frames]
    first = frames[0]
    all_d = np.concatenate(depths) if depths else np.zeros(0)
    h, w = first.depth.shape
    scale = float(scene.meta.depth_scale)
    warnings, notes = [], []
    if all_d.size == 0:
        warnings.append("no valid depth at all")
        med = p5 = p95 = float("nan")
    else:
        med, p5, p95 = (float(np.percentile(all_d, q)) for q in (50, 5, 95))
    K = first.K
    fov_x = float(np.degrees(2 * np.arctan(w / (2 * K[0, 0]))))
    if not 30.0 <= fov_x <= 130.0:
        warnings.append(f"horizontal field of view {fov_x:.0f}° is unusual: are the intrinsics for this resolution?")
    if abs(K[0, 2] - w / 2) > 0.2 * w or abs(K[1, 2] - h / 2) > 0.2 * h:
        warnings.append(
            f"principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is far from the image centre ({w / 2}, {h / 2}): "
            "intrinsics of another camera or resolution?"
        )
    hyps, (pairs, informative) = diagnose(frames, scale, max_pairs, med) if len(frames) > 1 else ([], (0, 0))
    given = next((hh for hh in hyps if not _changes(hh, Hypothesis(scale, "camera-to-world", "as given", 0))), None)
    inverted = next((hh for hh in hyps if _changes(hh, Hypothesis(scale, "camera-to-world", "as given", 0))
                     == ["pose convention"]), None)
    o_c2w = given.agreement if given else float("nan")
    o_w2c = inverted.agreement if inverted else float("nan")
    hyps.sort(key=lambda hh: -hh.agreement)
    suggested = None
    if not hyps:
        diagnosis, convention = "one frame", "unknown (one frame)"
    elif hyps[0].agreement < MIN_AGREEMENT:
        diagnosis, convention = "frames do not overlap", "unknown (frames do not overlap under any reading)"
        warnings.append(
            "consecutive frames share no geometry under any reading (depth scales "
            f"{', '.join(f'{s:g}' for s in _candidate_scales(scale, med))}, either pose convention): the poses are "
            "wrong or unrelated to the frames, or the frames are too far apart to check (try --png)")
    else:
        best = hyps[0]
        if not _clearly_better(best.agreement, given.agreement):
            diagnosis = "ok"
            convention = "camera-to-world"
            rivals = [hh for hh in hyps if "depth scale" in _changes(hh, given)
                      and not _clearly_better(given.agreement, hh.agreement)]
            if rivals:
                notes.append(
                    f"depth scale not verifiable from these frames: {rivals[0].depth_scale:g} fits as well as "
                    f"{scale:g} (the camera barely translates between the frames checked)")
        else:
            changed = _changes(best, given)
            rival = next((hh for hh in hyps[1:] if _changes(hh, given) != changed
                          and not _clearly_better(best.agreement, hh.agreement)), None)
            if rival is not None and rival.agreement >= given.agreement:
                diagnosis = "cannot tell"
                convention = "unknown (cannot tell)"
                warnings.append(
                    f"the frames agree poorly as given ({given.agreement:.0%}); two different fixes explain them "
                    f"about equally well: {_describe(best, given)} ({best.agreement:.0%}) or "
                    f"{_describe(rival, given)} ({rival.agreement:.0%}). Check the dataset's documentation.")
            else:
                diagnosis = " + ".join(changed)
                convention = best.convention
                if "depth scale" in changed:
                    suggested = best.depth_scale
                warnings.append(
                    f"{diagnosis}: {_describe(best, given)} makes consecutive frames agree on "
                    f"{best.agreement:.0%} of their points, against {given.agreement:.0%} as given")
    if diagnosis in ("ok", "one frame") and np.isfinite(med) and not 0.1 <= med <= 15.0:
        # Nothing to compare frames with (or the frames cannot tell): the depth range alone.
        warnings.append(
            f"median depth {med:.2f} m is implausible for an indoor scan: depth_scale {scale:g} is probably "
            f"{'too small' if med > 15 else 'too large'} (TUM uses 5000, ScanNet 1000 per metre)")
    valid_fraction = float(np.mean(np.isfinite(first.depth) & (first.depth > 0)))
    return SceneReport(
        root=str(root), frames=n, depth_size=(w, h), K_depth=np.round(K, 4).tolist(),
        depth_scale=scale, depth_median_m=med, depth_p5_m=p5, depth_p95_m=p95,
        valid_depth_fraction=valid_fraction, overlap_cam_to_world=o_c2w, overlap_world_to_cam=o_w2c,
        pairs_checked=informative, likely_convention=convention, diagnosis=diagnosis,
        suggested_depth_scale=suggested, hypotheses=hyps, warnings=warnings, notes=notes,
    )


def _describe(h: Hypothesis, given: Hypothesis) -> str:
    """The fix `h` stands for, in the words a user acts on."""
    parts = []
    for change in _changes(h, given):
        if change == "depth scale":
            parts.append(f"depth_scale {h.depth_scale:g} instead of {given.depth_scale:g} (depth "
                         f"{given.depth_scale / h.depth_scale:g}x as read)")
        elif change == "pose convention":
            parts.append("poses read as world-to-camera (pgov3d expects camera-to-world: invert them with "
                         "np.linalg.inv)")
        else:
            parts.append(f"intrinsics {h.intrinsics} to this image size")
    return " with ".join(parts) or "the scene as given"


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
        print(f"diagnosis        {report.diagnosis}")
        for hh in report.hypotheses[:4]:
            print(f"  reading        depth_scale {hh.depth_scale:g}, {hh.convention}, intrinsics {hh.intrinsics}: "
                  f"{hh.agreement:.0%} agree")
        for note in report.notes:
            print(f"note             {note}")
        for w in report.warnings:
            print(f"WARNING          {w}")
        if args.png:
            print(f"top-down view    {args.png}")
    return 1 if report.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
