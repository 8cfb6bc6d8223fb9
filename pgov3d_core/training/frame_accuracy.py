"""Frame accuracy: a quick per-point evaluation of a stage-1 model on (held-out) frames. Each point
gets the entity whose text embedding has the highest cosine with its feature, over the scene's
vocabulary (the entities that occur in the evaluated frames of that scene). Reports overall
accuracy, mean class accuracy and the chance level 1/|vocabulary| (point-weighted), which is what
a featureless model would score. The full mIoU/mAcc evaluation on complete scene clouds is
`pgov3d_core.scene_evaluation`; this is the training-time sanity check the tests rely on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pgov3d_core.inference import inference_grid_offset, predict_classes
from pgov3d_core.models.batch import collate_clouds
from pgov3d_core.training.augment import Augmentation
from pgov3d_core.training.stage1_data import PartialSceneDataset


@dataclass
class FrameEvalResult:
    accuracy: float  # correct / labelled points
    mean_class_accuracy: float
    chance: float  # point-weighted mean of 1 / |scene vocabulary|
    num_points: int
    num_frames: int
    num_classes: int  # distinct entity names over all evaluated scenes
    majority: float  # accuracy of always predicting each scene's most frequent entity

    def __str__(self) -> str:
        return (f"accuracy {self.accuracy:.3f} (chance {self.chance:.3f}, majority {self.majority:.3f}), "
                f"mAcc {self.mean_class_accuracy:.3f}, {self.num_points} points in {self.num_frames} frames, "
                f"{self.num_classes} classes")


def holdout_frames(dataset: PartialSceneDataset) -> list[tuple[int, int]]:
    """Frames that are never a sampled training frame (those off the frame_stride grid)."""
    used = set(dataset.items)
    return [(si, fi) for si, scene in enumerate(dataset.scenes) for fi in range(len(scene)) if (si, fi) not in used]


@torch.no_grad()
def evaluate_frames(
    model: nn.Module,
    dataset: PartialSceneDataset,
    frames: Iterable[tuple[int, int]],
    embed: Callable[[list[str]], torch.Tensor],
    device: torch.device | str = "cpu",
) -> FrameEvalResult:
    """Accuracy of argmax-cosine classification of the points of `frames` ((scene, frame) indices
    into `dataset`), `embed(names) -> (V, D)` giving text embeddings (TextEncoder.encode works)."""
    was_training = model.training
    model.eval()
    by_scene: dict[int, list[int]] = defaultdict(list)
    for si, fi in frames:
        by_scene[si].append(fi)
    correct = total = 0
    chance_sum = 0.0
    per_class_hits: dict[str, int] = defaultdict(int)
    per_class_total: dict[str, int] = defaultdict(int)
    n_frames = 0
    majority_hits = 0
    # No augmentation, on the grid inference uses (voxel layers centred on z = 0). A height input sees
    # the same half-voxel lift, well inside training's random translation (augment.translate).
    identity = Augmentation.identity()
    identity.shift = inference_grid_offset(dataset.cfg.voxel_size)
    try:
        for si, fis in sorted(by_scene.items()):
            loaded = [dataset.load_frame(si, fi) for fi in fis]
            vocab = sorted({fp.names[k] for fp in loaded for k in fp.labels[fp.labels >= 0].unique().tolist()})
            if not vocab:
                continue
            text = embed(vocab).to(device=device, dtype=torch.float32)
            lookup = {n: i for i, n in enumerate(vocab)}
            scene_counts = torch.zeros(len(vocab), dtype=torch.int64)
            for fp in loaded:
                n_frames += 1
                mask = fp.labels >= 0
                if not bool(mask.any()):
                    continue
                center = fp.points.mean(dim=0)
                cloud = dataset.voxelize(fp, identity, center)
                feats = model(collate_clouds([cloud]).to(device)).float()
                pred = predict_classes(feats, text)
                table = torch.tensor([lookup.get(n, -1) for n in fp.names], dtype=torch.int64)
                gt = table[fp.labels[mask]]
                hit = pred[mask] == gt
                scene_counts += torch.bincount(gt, minlength=len(vocab))
                correct += int(hit.sum())
                total += int(mask.sum())
                chance_sum += int(mask.sum()) / len(vocab)
                for cls in gt.unique().tolist():
                    sel = gt == cls
                    per_class_hits[vocab[cls]] += int(hit[sel].sum())
                    per_class_total[vocab[cls]] += int(sel.sum())
            majority_hits += int(scene_counts.max())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no labelled points in the evaluated frames")
    macc = sum(per_class_hits[c] / per_class_total[c] for c in per_class_total) / len(per_class_total)
    return FrameEvalResult(correct / total, macc, chance_sum / total, total, n_frames, len(per_class_total),
                           majority_hits / total)
