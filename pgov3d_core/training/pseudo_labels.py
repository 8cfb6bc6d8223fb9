"""Stage 2 point-wise pseudo-labels (paper §3.2, "Point-wise Entity Generation").

1. Scene vocabulary C: the union of the grounded labels of all the scene's frames, normalised
   (case, whitespace, plural → singular, duplicates) with the labelling parser's `normalize_label`
   (generic words such as "picture" are kept: a grounded label owns pixels). With free-form names
   (an MLLM, or the oracle's synonym mode) C holds every name a class was given ("sofa", "couch").
2. The stage-1 model labels the full scene cloud under repeated random grid sampling: voxelise,
   keep one random point per voxel, run the model on that subset, and repeat until every point has
   been kept at least once (and at least `min_passes` times overall). Each pass gives the kept
   points a class distribution softmax(cos(feature, text) / temperature) over C; a point's
   distributions are averaged over the passes that kept it. (`voxel_size=None`: no repeated sampling,
   one network pass over every point: the single-pass prediction the smoothing replaces, for the
   ablation.) With `rotate_z` each pass presents
   its subset turned by its own random angle about the vertical axis (the rotation stage 1 trains
   under), so the network's voxel grid lies differently on the scene in every pass and the
   passes' errors average out; axis-aligned passes keep nearly the same voxels and agree in their
   mistakes (measured in README "Where learning stands").
3. Label = argmax of the averaged distribution; points whose averaged top probability is below
   `confidence_threshold` are ignored (-1).

Results are cached per scene in `<scene>/pseudo_labels/<tag>.npz` (written atomically; a file
that does not load or does not match the scene's point count or the vocabulary is rebuilt).
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.fileio import atomic_write
from pgov3d_core.geometry import random_grid_sample, repeated_grid_sampling
from pgov3d_core.labelling.parsing import normalize_label

log = logging.getLogger(__name__)

FeatureFn = Callable[[torch.Tensor, float], torch.Tensor]
"""Given indices into the scene cloud (a subset with one point per voxel) and an angle (radians),
return the model's (len(indices), D) point features for that subset, computed on the subset alone
after turning it by the angle about the vertical (z) axis."""


def scene_vocabulary(label_lists: Iterable[Iterable[str]]) -> list[str]:
    """Union of per-frame label lists, normalised and de-duplicated, most frequent first (ties
    alphabetical) so the order is deterministic."""
    counts: Counter[str] = Counter()
    for labels in label_lists:
        counts.update({n for n in (normalize_label(t) for t in labels) if n})
    return sorted(counts, key=lambda t: (-counts[t], t))


@dataclass
class PseudoLabels:
    labels: np.ndarray  # (N,) int64 index into vocabulary, -1 = ignored (low confidence)
    confidence: np.ndarray  # (N,) float32 averaged top probability
    passes: np.ndarray  # (N,) int32 how many passes kept each point
    vocabulary: list[str]


@torch.no_grad()
def repeated_sampling_probabilities(
    features_of: FeatureFn,
    xyz: torch.Tensor,
    text_sets: list[torch.Tensor],
    voxel_size: float | None = 0.02,
    temperature: float = 0.01,
    min_passes: int = 1,
    max_passes: int | None = None,
    generator: torch.Generator | None = None,
    rotate_z: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Step 2 of the module docstring: each point's class distribution softmax(cos / T) averaged over
    the repeated-grid-sampling passes that kept it, for each (C_k, D) text matrix of `text_sets`
    (the network runs once per pass whatever their number). Returns the (N, C_k) averages (zero rows
    for points no pass kept) and the (N,) pass counts. `voxel_size=None`: one pass over every point,
    as the scene lies (no sampling, no turn; `min_passes`, `max_passes` and `rotate_z` do not apply)."""
    n = xyz.shape[0]
    texts = [torch.nn.functional.normalize(t.float(), dim=1) for t in text_sets]
    prob_sums = [torch.zeros((n, t.shape[0]), dtype=torch.float32) for t in texts]
    passes = torch.zeros(n, dtype=torch.int32)
    if voxel_size is None:
        schedule, rotate_z = [torch.arange(n)], False
    else:
        covering = repeated_grid_sampling(xyz, voxel_size, generator)
        extra = max(0, min_passes - len(covering))
        schedule = covering + [random_grid_sample(xyz, voxel_size, generator) for _ in range(extra)]
        if max_passes is not None:
            schedule = schedule[:max_passes]
    for idx in schedule:
        angle = float(torch.rand((), generator=generator)) * 2.0 * math.pi if rotate_z else 0.0
        feats = torch.nn.functional.normalize(features_of(idx, angle).float(), dim=1).cpu()
        for text, prob_sum in zip(texts, prob_sums, strict=True):
            prob_sum.index_add_(0, idx.cpu(), torch.softmax(feats @ text.T / temperature, dim=1))
        passes.index_add_(0, idx.cpu(), torch.ones(len(idx), dtype=torch.int32))
    seen = passes > 0
    averages = []
    for prob_sum in prob_sums:
        avg = torch.zeros_like(prob_sum)
        avg[seen] = prob_sum[seen] / passes[seen, None]
        averages.append(avg)
    return averages, passes


def pseudo_label_points(
    features_of: FeatureFn,
    xyz: torch.Tensor,
    text_embeddings: torch.Tensor,
    vocabulary: list[str],
    voxel_size: float | None = 0.02,
    temperature: float = 0.01,
    min_passes: int = 1,
    max_passes: int | None = None,
    confidence_threshold: float = 0.5,
    generator: torch.Generator | None = None,
    rotate_z: bool = False,
) -> PseudoLabels:
    if len(vocabulary) != text_embeddings.shape[0]:
        raise ValueError(f"{len(vocabulary)} vocabulary entries but {text_embeddings.shape[0]} text embeddings")
    if len(vocabulary) == 0:
        raise ValueError("empty scene vocabulary: no frame of this scene has grounded labels")
    (avg,), passes = repeated_sampling_probabilities(features_of, xyz, [text_embeddings], voxel_size, temperature,
                                                     min_passes, max_passes, generator, rotate_z)
    confidence, labels = avg.max(dim=1)
    labels[(confidence < confidence_threshold) | (passes == 0)] = -1
    return PseudoLabels(labels.numpy(), confidence.numpy().astype(np.float32), passes.numpy(), list(vocabulary))


# ------------------------------------------------------------------ per-scene cache


def cache_path(scene_root: str | os.PathLike, tag: str) -> Path:
    return Path(scene_root) / "pseudo_labels" / f"{tag}.npz"


def save_pseudo_labels(path: Path, pl: PseudoLabels) -> None:
    atomic_write(path, lambda f: np.savez(f, labels=pl.labels, confidence=pl.confidence, passes=pl.passes,
                                          vocabulary=np.array(pl.vocabulary, dtype=np.str_)))


def load_pseudo_labels(path: Path, n_points: int | None = None, vocabulary: list[str] | None = None):
    """The cached pseudo-labels, or None (with the reason logged) when missing, unreadable or stale."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            pl = PseudoLabels(z["labels"], z["confidence"], z["passes"], [str(v) for v in z["vocabulary"]])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("rebuilding %s: unreadable (%s)", path, exc)
        return None
    if n_points is not None and len(pl.labels) != n_points:
        log.warning("rebuilding %s: %d labels for a %d-point cloud", path, len(pl.labels), n_points)
        return None
    if vocabulary is not None and pl.vocabulary != list(vocabulary):
        log.warning("rebuilding %s: vocabulary changed", path)
        return None
    if len(pl.labels) and (pl.labels.max() >= len(pl.vocabulary) or pl.labels.min() < -1):
        log.warning("rebuilding %s: label ids out of range", path)
        return None
    return pl
