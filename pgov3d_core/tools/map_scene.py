"""Map a scene folder offline with the same OnlineMapper the ROS node runs, query it, and write
what a user without RViz needs to look at the result.

    python -m pgov3d_core.tools.map_scene <scene folder> --checkpoint stage2.pt --query chair sofa \\
        --out results/ [--voxel-size 0.02] [--stride 1] [--min-score 0.2] [--device auto]
    python -m pgov3d_core.tools.map_scene <scene folder> --oracle-labels --query couch --out results/

Writes to --out: map.npz (the node's map format: `initial_map:=` continues it), query.ply (every
voxel, coloured by its best query, with `label` and `score` fields), and per query a heat-map of
its score over the map, seen from above (below the ceiling) and obliquely:
`<query>_top.png`, `<query>_oblique.png`. Prints a table of points and best score per query.

--oracle-labels uses the scene's label/ images (class names from meta.yaml) instead of a
network: per voxel the embedding of its majority class, as the node's feature_source
oracle_labels does (ground truth in the text space: a check of the text side alone).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from pgov3d_core.data.scene import PointCloud, Scene, SceneError, write_ply_cloud
from pgov3d_core.map import VoxelMap
from pgov3d_core.online import OnlineMapper, QueryError


def build_mapper(scene: Scene, checkpoint: str | None, oracle: bool, voxel_size: float, stride: int,
                 max_depth: float, device: str, text_encoder: dict | None = None) -> OnlineMapper:
    from pgov3d_core.device import resolve_device
    from pgov3d_core.labelling.text_encoder import TextEncoder

    dev = resolve_device(device)
    predictor = None
    classes = list(scene.meta.class_names) if oracle else []
    if oracle and not classes:
        raise SceneError(f"{scene.root}: --oracle-labels needs class_names in meta.yaml and label/ images")
    if checkpoint:
        from pgov3d_core.inference import PointFeaturePredictor

        predictor = PointFeaturePredictor.from_checkpoint(checkpoint, dev)
    cfg = dict(text_encoder or (predictor.text_encoder_config if predictor and predictor.text_encoder_config
                                else {"backend": "sentence"}))
    cfg["device"] = str(dev)
    encoder = TextEncoder(cfg)
    vmap = VoxelMap(voxel_size=voxel_size, max_depth=max_depth, pixel_stride=stride, device=dev,
                    num_label_classes=len(classes))
    # The whole scene in one network pass: offline there is no camera to keep up with.
    return OnlineMapper(vmap, predictor=predictor, text_encoder=encoder, oracle_class_names=classes,
                        network_voxel_budget=2**31 - 1, queue_size=1)


def map_scene(scene: Scene, mapper: OnlineMapper, max_frames: int | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    frames = range(len(scene))[:max_frames]
    for i in tqdm(frames, desc="integrating", disable=not progress, unit="frame"):
        try:
            mapper.submit(scene[i])
        except SceneError as exc:  # a damaged frame is skipped, counted, never the whole scene
            mapper.drop("unreadable frame", str(exc))
            continue
        mapper.integrate_pending()
    mapper.network_pass()
    mapper.refresh_oracle_features()
    return mapper.status()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "query"


def render_heat_map(xyz: np.ndarray, score: np.ndarray, out_png: Path, title: str, view: str) -> Path:
    """Scores (NaN: no feature) of the map's points as a heat-map. `top`: seen from above, the
    ceiling left out (points within 0.3 m of the top of a room-sized map), so the room's contents
    show; `oblique`: from 35° above, 45° around."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = np.ones(len(xyz), bool)
    if view == "top":
        z = xyz[:, 2]
        if len(z) and np.ptp(z) > 1.5:
            keep = z < np.percentile(z, 99.5) - 0.3
        order = np.argsort(z[keep])  # the highest point of each column drawn last
        u, v = xyz[keep][order, 0], xyz[keep][order, 1]
    else:
        a, e = np.radians(45.0), np.radians(35.0)
        x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        right = x * np.cos(a) - y * np.sin(a)
        fwd = x * np.sin(a) + y * np.cos(a)
        up = z * np.cos(e) - fwd * np.sin(e)
        depth = fwd * np.cos(e) + z * np.sin(e)
        order = np.argsort(-depth)  # painter's order: far points first
        u, v = right[order], up[order]
    s = score[keep][order] if view == "top" else score[order]
    fig, ax = plt.subplots(figsize=(6, 5))
    shown = np.where(np.isfinite(s), s, np.nan)
    sc = ax.scatter(u, v, c=shown, s=2, cmap="inferno", vmin=np.nanmin(shown) if np.isfinite(shown).any() else 0,
                    vmax=np.nanmax(shown) if np.isfinite(shown).any() else 1, linewidths=0, plotnonfinite=True)
    sc.cmap.set_bad("#bbbbbb")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.set_axis_off()
    fig.colorbar(sc, ax=ax, shrink=0.8, label="cosine score")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_results(mapper: OnlineMapper, queries: list[str], out: Path, min_score: float) -> list[dict]:
    """map.npz, query.ply and the per-query PNGs; returns one row per query."""
    out.mkdir(parents=True, exist_ok=True)
    mapper.save(out / "map.npz")
    answer = mapper.query(queries, min_score=min_score)
    with mapper.lock:
        xyz = mapper.map.voxel_means().cpu().numpy()
        rgb = mapper.map.colors().cpu().numpy()
        texts = mapper.text_encoder.encode(answer.texts)
        per_text = [mapper.map.query(texts[q], min_score=-2.0).scores.cpu().numpy() for q in range(len(queries))]
        full = mapper.map.query(texts, min_score=min_score)
    labels = full.labels.cpu().numpy().astype(np.int32)
    scores = np.nan_to_num(full.scores.cpu().numpy(), nan=-2.0).astype(np.float32)
    from pgov3d_core.labelling.entities import label_color

    colours = rgb.copy()
    for q, text in enumerate(answer.texts):
        colours[labels == q] = label_color(text)
    write_ply_cloud(out / "query.ply", PointCloud(xyz.astype(np.float32), colours, labels), extra={"score": scores})
    rows = []
    for q, text in enumerate(answer.texts):
        slug = _slug(text)
        top = render_heat_map(xyz, per_text[q], out / f"{slug}_top.png", f"'{text}': score, from above", "top")
        oblique = render_heat_map(xyz, per_text[q], out / f"{slug}_oblique.png", f"'{text}': score", "oblique")
        rows.append({"query": text, "points": answer.counts[q], "best_score": answer.best_scores[q],
                     "top_png": top, "oblique_png": oblique})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgov3d_core.tools.map_scene", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", help="canonical scene folder (color/, depth/, pose/, intrinsic/)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pgov3d checkpoint of the 3D network (stage 1 or 2)")
    source.add_argument("--oracle-labels", action="store_true", help="features from the scene's label images")
    parser.add_argument("--query", nargs="+", required=True, help="texts to label the map with")
    parser.add_argument("--out", required=True, type=Path, help="folder for map.npz, query.ply and the PNGs")
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--stride", type=int, default=1, help="integrate every n-th pixel")
    parser.add_argument("--max-depth", type=float, default=5.0)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--min-score", type=float, default=0.0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args(argv)
    try:
        scene = Scene(args.scene)
        mapper = build_mapper(scene, args.checkpoint, args.oracle_labels, args.voxel_size, args.stride,
                              args.max_depth, args.device)
        status = map_scene(scene, mapper, args.max_frames)
        rows = write_results(mapper, args.query, args.out, args.min_score)
    except (SceneError, QueryError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"integrated {status['frames_integrated']} of {len(scene)} frames into {status['voxels']} voxels "
          f"({status['voxels_with_features']} with features); dropped: {status['dropped'] or 'none'}")
    print(f"{'query':<24} {'points':>8} {'best score':>10}  renders")
    for r in rows:
        print(f"{r['query']:<24} {r['points']:>8} {r['best_score']:>10.3f}  {r['top_png']}, {r['oblique_png']}")
    print(f"map {args.out / 'map.npz'}   cloud {args.out / 'query.ply'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
