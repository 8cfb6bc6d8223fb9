"""Seconds per frame of pixel-wise entity labelling, per model and for the whole cached pipeline.

Without weight paths it times the tiny random-weight checkpoints (`pgov3d_core.labelling.tiny`)
on the current device: the cost of the code paths, not of the real models. With
--llava/--grounding-dino/--sam it times the real checkpoints (a GPU is expected for those).

    python bench/bench_labelling.py [--quick] [--frames N] [--size 320x240] [--device auto]
    python bench/bench_labelling.py --llava W/llava-v1.6-mistral-7b-hf \\
        --grounding-dino W/grounding-dino-base --sam W/sam_vit_h_4b8939.pth [--sam-model-type vit_h]

Frames are rendered by the synthetic room generator at --size. Each figure is the minimum over
2-3 repeats after a warm-up call (benchmarks may share the machine).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.scene import Scene
from pgov3d_core.data.synthetic import generate_scene
from pgov3d_core.labelling.config import LabellingConfig
from pgov3d_core.labelling.entities import merge_masks
from pgov3d_core.labelling.labellers import ModelLabeller, OracleLabeller
from pgov3d_core.labelling.pipeline import label_scenes
from pgov3d_core.labelling.tiny import build_tiny_weights, tiny_labelling_config
from pgov3d_core.query_kernels import cpu_summary
from pgov3d_core.weights import WeightsError


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    _sync()
    t = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer frames")
    p.add_argument("--frames", type=int, default=None, help="frames to label (default 8, 4 with --quick)")
    p.add_argument("--size", default="320x240", help="frame size WxH")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--llava", help="LLaVA-NeXT checkpoint folder (real-size run)")
    p.add_argument("--grounding-dino", help="GroundingDINO checkpoint folder (real-size run)")
    p.add_argument("--sam", help="SAM .pth (real-size run)")
    p.add_argument("--sam-model-type", default="vit_h")
    args = p.parse_args()
    print(cpu_summary(), flush=True)
    n_frames = args.frames or (4 if args.quick else 8)
    width, height = (int(v) for v in args.size.lower().split("x"))
    real = any((args.llava, args.grounding_dino, args.sam))

    with tempfile.TemporaryDirectory(prefix="bench_labelling_") as tmp:
        tmp = Path(tmp)
        scene_root = generate_scene(tmp / "scene", seed=0, n_frames=n_frames, width=width, height=height)
        if real:
            cfg = LabellingConfig.from_dict({
                "device": args.device, "batch_size": args.batch_size,
                "weights": {"llava": args.llava, "grounding_dino": args.grounding_dino, "sam": args.sam},
                "segmentation": {"sam_model_type": args.sam_model_type},
            })
            kind = "real checkpoints"
        else:
            cfg = tiny_labelling_config(build_tiny_weights(tmp / "weights"), device=args.device,
                                        batch_size=args.batch_size)
            kind = "tiny random-weight checkpoints"
        try:
            labeller, load_s = timed(lambda: ModelLabeller(cfg))
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        scene = Scene(scene_root)
        frames = [scene.frame(fid) for fid in scene.frame_ids]
        images = [f.color for f in frames]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {labeller.device}, {kind}, "
              f"{n_frames} synthetic {width}x{height} frames, batch {cfg.batch_size}, models loaded in {load_s:.1f} s")

        repeats = 2 if args.quick else 3

        def best(fn):
            """Minimum over repeats after one warm-up call: the machine may be shared."""
            out, _ = timed(fn)
            return out, min(timed(fn)[1] for _ in range(repeats))

        def pipeline():
            shutil.rmtree(scene_root / "entities", ignore_errors=True)
            return label_scenes(scene_root, cfg, labeller_factory=lambda c: labeller, progress=False,
                                print_summary=False)

        def segment_all(dets):
            return [labeller.segmenter.segment(im, d.boxes) for im, d in zip(images, dets, strict=True)]

        def merge_all(masks, dets, answers):
            return [merge_masks(m, d.scores, d.categories, a.categories)
                    for m, d, a in zip(masks, dets, answers, strict=True)]

        answers, t_llava = best(lambda: labeller.vocabulary.describe_and_list(images))
        dets, t_gdino = best(lambda: labeller.detector.detect(images, [a.categories for a in answers]))
        masks, t_sam = best(lambda: segment_all(dets))
        _, t_merge = best(lambda: merge_all(masks, dets, answers))
        _, t_oracle = best(lambda: OracleLabeller().label(frames, scene.class_names))
        _, t_pipe = best(pipeline)
        _, t_resume = best(lambda: label_scenes(scene_root, cfg, labeller_factory=lambda c: labeller,
                                                progress=False, print_summary=False))

        n_cat = np.mean([len(a.categories) for a in answers])
        n_box = np.mean([len(d) for d in dets])
        rows = [
            ("LLaVA-NeXT, 2 turns (describe + list)", t_llava, f"{n_cat:.1f} categories/frame"),
            ("GroundingDINO", t_gdino, f"{n_box:.1f} boxes/frame"),
            ("SAM (encoder + box decoder)", t_sam, ""),
            ("mask merge", t_merge, ""),
            ("oracle labeller", t_oracle, ""),
            ("pipeline: models + cache writes", t_pipe, ""),
            ("pipeline: second run (all cached)", t_resume, "no model call"),
        ]
        print()
        print("| stage | s/frame | note |")
        print("| --- | --- | --- |")
        for name, total, note in rows:
            print(f"| {name} | {total / n_frames:.4f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
