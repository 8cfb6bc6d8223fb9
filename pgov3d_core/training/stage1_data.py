"""Stage 1 data (paper §3.1): partial scenes back-projected from single RGB-D frames, each with
per-point entities and paired with a nearby frame of the same sequence for the consistency term.

One sample = frame i (every `frame_stride`-th frame of every scene, paper: every 100th) + partner
frame j = i ± offset (offset uniform in `pair_offset`, any frame of the sequence):

1. Eq. 1 back-projection of both frames (`geometry.backproject`), every `pixel_stride`-th pixel,
   depths in (min_depth, max_depth]; each point inherits its pixel's entity via `pixel_index`.
2. A = `geometry.match_frames` on the world points at a fine voxel (`match_voxel`), capped at
   `max_pairs`: the same physical point seen by both frames.
3. Optionally (`paste`, PasteConfig) rare entities of other frames appended to frame i.
4. One augmentation for both frames, then voxelisation at `voxel_size` (voxel feature = mean
   network input of its points: colour [+ normal] [+ height], `models.inputs`).

Entities are per-sample names; `collate` merges them into a per-batch vocabulary (sorted, so a
batch's label ids do not depend on sample order within the batch) and the objective embeds it.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.config import from_section, section
from pgov3d_core.data.scene import Scene
from pgov3d_core.geometry import backproject, match_frames, random_grid_sample, rotation_z, turned
from pgov3d_core.models.batch import VoxelCloud, collate_clouds, point_offsets, voxelize_cloud
from pgov3d_core.models.inputs import input_channels, point_inputs
from pgov3d_core.training.augment import Augmentation, AugmentConfig
from pgov3d_core.training.labels import FrameLabelSource, make_label_source, resize_labels
from pgov3d_core.training.objective import LabelledBatch, batch_vocabulary, remap_labels

# Keys of a `data` section that say where the scenes come from (read by stage1.resolve_scenes and
# the label source), as opposed to the settings of the samples built from them.
SCENE_SOURCE_KEYS = ("scenes", "root", "synthetic", "labels")

log = logging.getLogger(__name__)


def sample_settings(data: dict | None) -> dict:
    """A `data` section without its scene-source keys: what the sample configs check."""
    return {k: v for k, v in (data or {}).items() if k not in SCENE_SOURCE_KEYS}


@dataclass
class PasteConfig:
    """Rare-entity copy-paste (off at count 0): each sample's first frame gets `count` entities of
    rare names pasted in, each the points of one name in one training frame (any scene), turned by a
    random angle about z and moved so its xy centroid lands on a random point of the frame (world z
    kept: gravity-aligned scenes, floor at one height, as ScanNet's). A name is rare when it holds
    less than `max_share` of all labelled training pixels; a pasted name is drawn uniformly among the
    rare names, then one of its frames showing at least `min_points` of its points. Why: under Eq. 2's
    plain mean a 0.1 %-of-pixels name (toilet, sink) was never fitted. Pasting leaves the loss alone;
    it raised those names' share of a batch's points only ~3x, but shows them out of their rooms'
    context (Mix3D-style), and with it they were fitted (README "Rare-entity copy-paste")."""

    count: int = 0
    max_share: float = 0.005
    min_points: int = 30

    def __post_init__(self) -> None:
        if int(self.count) < 0 or not 0 < float(self.max_share) <= 1 or int(self.min_points) < 1:
            raise ValueError(f"paste needs count >= 0, 0 < max_share <= 1, min_points >= 1; got count={self.count}, "
                             f"max_share={self.max_share}, min_points={self.min_points}")
        self.count, self.max_share, self.min_points = int(self.count), float(self.max_share), int(self.min_points)


@dataclass
class PartialSceneConfig:
    voxel_size: float = 0.05
    pixel_stride: int = 1
    min_depth: float = 0.1
    max_depth: float = 6.0
    frame_stride: int = 1  # paper: every 100th frame of a sequence
    pair_offset: tuple[int, int] = (1, 10)  # partner frame offset range (frames, either direction)
    match_voxel: float = 0.02  # "same physical point" grid for A
    max_pairs: int = 4096
    max_points: int | None = None  # random subset per frame (bounds memory on full-res frames)
    normals: bool = False  # append per-point normals (from the depth image) to the colour features
    height: bool = False  # append the point's world z (gravity-aligned frame, floor at 0; models/inputs.py)
    # LVIS repeat-factor sampling (Gupta et al. 2019) over frames: 0 = every frame once per epoch;
    # t > 0 repeats frame i round(max(1, max_e sqrt(t / f_e))) times per epoch, f_e = the fraction of
    # frames whose entities include e, so frames showing rare entities are sampled more often
    # (the loss stays Eq. 2's plain mean over the points of each batch).
    repeat_threshold: float = 0.0
    # Back-projected frames kept in memory (MB, least recently used dropped first; 0 = none): a
    # sample's frames are read and decoded again every epoch otherwise, about half of its load time.
    frame_cache_mb: float = 1024.0
    augment: AugmentConfig = section(AugmentConfig)
    paste: PasteConfig = section(PasteConfig)

    def __post_init__(self) -> None:
        lo, hi = (int(v) for v in self.pair_offset)
        if lo < 0 or hi < lo:
            raise ValueError(f"pair_offset must be [min, max] with 0 <= min <= max, got {list(self.pair_offset)}")
        self.pair_offset = (lo, hi)

    @classmethod
    def from_dict(cls, d: dict | None) -> PartialSceneConfig:
        """The stage-1 `data` settings (`sample_settings` removes the scene-source keys first)."""
        return from_section(cls, d, "data")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The model inputs these samples carry (the model config's `inputs`)."""
        return ("color",) + (("normal",) if self.normals else ()) + (("height",) if self.height else ())

    @property
    def in_channels(self) -> int:
        return input_channels(self.inputs)


@dataclass
class FramePoints:
    """One frame's partial cloud: world points (N, 3) float32, colours (N, 3) float32 in [0, 1],
    normals (N, 3) or None, labels (N,) int64 into `names` (-1 = no entity)."""

    points: torch.Tensor
    colors: torch.Tensor
    normals: torch.Tensor | None
    labels: torch.Tensor
    names: list[str]


@dataclass
class Stage1Sample:
    cloud_a: VoxelCloud
    cloud_b: VoxelCloud
    labels_a: torch.Tensor  # (Na,) int64 into names
    labels_b: torch.Tensor
    names: list[str]
    pairs: torch.Tensor  # (P, 2) int64: row in cloud a's points, row in cloud b's points
    frames: tuple[str, str, str] = ("", "", "")  # scene root, frame a, frame b (for debugging)


def depth_normals(depth: np.ndarray, K: np.ndarray, stride: int) -> np.ndarray:
    """Camera-frame unit normals of an organised depth image (at `stride`), from central
    differences of the back-projected grid, oriented towards the camera. Pixels without valid
    neighbours get the reversed viewing ray. Shape (H', W', 3)."""
    d = np.asarray(depth, dtype=np.float64)[::stride, ::stride]
    h, w = d.shape
    vs = np.arange(0, depth.shape[0], stride)[:h, None]
    us = np.arange(0, depth.shape[1], stride)[None, :w]
    valid = np.isfinite(d) & (d > 0)
    z = np.where(valid, d, np.nan)
    y = (vs - K[1, 2]) / K[1, 1] * z
    x = (us - K[0, 2] - K[0, 1] * y / np.where(valid, z, 1.0)) / K[0, 0] * z
    p = np.stack([x, y, z], axis=-1)
    pad = np.pad(p, ((1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    du = pad[1:-1, 2:] - pad[1:-1, :-2]
    dv = pad[2:, 1:-1] - pad[:-2, 1:-1]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ray = p / np.linalg.norm(np.where(np.isfinite(p), p, 1.0), axis=-1, keepdims=True)
    ok = np.isfinite(norm) & (norm > 1e-12)
    n = np.where(ok, n / np.where(ok, norm, 1.0), -np.nan_to_num(ray))
    flip = np.sum(n * np.nan_to_num(p), axis=-1, keepdims=True) > 0
    return np.where(flip, -n, n).astype(np.float32)


def open_scenes(paths: list[str | os.PathLike]) -> list[Scene]:
    return [p if isinstance(p, Scene) else Scene(p) for p in paths]


class PartialSceneDataset:
    """Stage 1 sample source (see the module docstring); `get(index, generator)` is deterministic
    given the generator's seed."""

    def __init__(self, scenes: list[Scene | str | os.PathLike], label_source: FrameLabelSource | str | dict | None,
                 cfg: PartialSceneConfig | dict | None = None):
        self.scenes = open_scenes(list(scenes))
        self.labels = label_source if hasattr(label_source, "frame_labels") else make_label_source(label_source)
        self.cfg = cfg if isinstance(cfg, PartialSceneConfig) else PartialSceneConfig.from_dict(cfg)
        if self.cfg.frame_stride < 1 or self.cfg.pixel_stride < 1:
            raise ValueError("frame_stride and pixel_stride must be >= 1")
        stride = self.cfg.frame_stride
        self.items = [(si, fi) for si, scene in enumerate(self.scenes) for fi in range(0, len(scene), stride)]
        self._frame_cache: OrderedDict[tuple[int, int], FramePoints] = OrderedDict()
        self._cache_bytes = 0
        if self.cfg.repeat_threshold < 0:
            raise ValueError(f"data.repeat_threshold must be >= 0 (0: off), got {self.cfg.repeat_threshold}")
        if self.cfg.repeat_threshold > 0:
            repeats = self.repeat_factors(self.cfg.repeat_threshold)
            self.items = [item for item, r in zip(self.items, repeats, strict=True) for _ in range(r)]
        # Rare names -> their (scene, frame) occurrences with enough points (PasteConfig).
        self.paste_bank: dict[str, list[tuple[int, int]]] = self.rare_entities() if self.cfg.paste.count else {}
        if self.cfg.paste.count and not self.paste_bank:
            log.warning("data.paste.count is %d but no entity name is under max_share %.4g of the labelled pixels "
                        "(with >= %d points in a frame): nothing is pasted", self.cfg.paste.count,
                        self.cfg.paste.max_share, self.cfg.paste.min_points)

    def rare_entities(self) -> dict[str, list[tuple[int, int]]]:
        """Names under `paste.max_share` of all labelled pixels of every frame, each with the frames
        showing at least `paste.min_points` back-projected points of it (pixel counts / stride²)."""
        c = self.cfg.paste
        pixels: dict[str, int] = {}
        shown: dict[str, list[tuple[int, int]]] = {}
        total = 0
        for si, scene in enumerate(self.scenes):
            for fi, fid in enumerate(scene.frame_ids):
                labels, names = self.labels.frame_labels(scene, fid)
                counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(names))
                total += int(counts.sum())
                for k in np.flatnonzero(counts).tolist():
                    pixels[names[k]] = pixels.get(names[k], 0) + int(counts[k])
                    if counts[k] / self.cfg.pixel_stride**2 >= c.min_points:
                        shown.setdefault(names[k], []).append((si, fi))
        return {n: shown[n] for n in sorted(pixels) if pixels[n] < c.max_share * total and n in shown}

    def frame_entities(self, scene_index: int, frame_index: int) -> set[str]:
        """The entity names that own pixels of a frame."""
        scene = self.scenes[scene_index]
        labels, names = self.labels.frame_labels(scene, scene.frame_ids[frame_index])
        return {names[k] for k in np.unique(labels[labels >= 0]).tolist()}

    def repeat_factors(self, threshold: float) -> list[int]:
        """Per item, how many times it occurs in an epoch under repeat-factor sampling (see
        PartialSceneConfig.repeat_threshold)."""
        present = [self.frame_entities(si, fi) for si, fi in self.items]
        counts: dict[str, int] = {}
        for names in present:
            for n in names:
                counts[n] = counts.get(n, 0) + 1
        n_items = len(self.items)
        return [int(round(max([1.0] + [float(np.sqrt(threshold * n_items / counts[n])) for n in names])))
                for names in present]

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------ single frames

    def load_frame(self, scene_index: int, frame_index: int) -> FramePoints:
        """Eq. 1 partial cloud of one frame with per-point entities (no augmentation). Served from
        the frame cache when there (`frame_cache_mb`): callers must not modify its tensors."""
        key = (scene_index, frame_index)
        cached = self._frame_cache.get(key)
        if cached is not None:
            self._frame_cache.move_to_end(key)
            return cached
        fp = self._read_frame(scene_index, frame_index)
        size = sum(t.numel() * t.element_size() for t in (fp.points, fp.colors, fp.normals, fp.labels)
                   if t is not None)
        limit = self.cfg.frame_cache_mb * 2**20
        if size <= limit:
            self._frame_cache[key] = fp
            self._cache_bytes += size
            while self._cache_bytes > limit:
                _, old = self._frame_cache.popitem(last=False)
                self._cache_bytes -= sum(t.numel() * t.element_size()
                                         for t in (old.points, old.colors, old.normals, old.labels) if t is not None)
        return fp

    def _read_frame(self, scene_index: int, frame_index: int) -> FramePoints:
        c = self.cfg
        scene = self.scenes[scene_index]
        fid = scene.frame_ids[frame_index]
        frame = scene.frame(fid)
        points, pix = backproject(frame.depth, frame.K, frame.pose, stride=c.pixel_stride, min_depth=c.min_depth,
                                  max_depth=c.max_depth)
        label_img, names = self.labels.frame_labels(scene, fid)
        label_img = resize_labels(label_img, (frame.width, frame.height))
        labels = torch.from_numpy(label_img.reshape(-1).astype(np.int64))[pix]
        rgb = torch.from_numpy(np.array(frame.color, dtype=np.uint8).reshape(-1, 3))  # a writable copy
        colors = rgb[pix].to(torch.float32) / 255.0
        normals = None
        if c.normals:
            n_cam = depth_normals(frame.depth, np.asarray(frame.K, dtype=np.float64), c.pixel_stride)
            u, v = pix % frame.width, pix // frame.width
            n_cam = torch.from_numpy(n_cam)[v // c.pixel_stride, u // c.pixel_stride]
            normals = n_cam @ torch.as_tensor(frame.pose[:3, :3], dtype=torch.float32).T
        return FramePoints(points, colors, normals, labels, names)

    def voxelize(self, fp: FramePoints, aug: Augmentation, center: torch.Tensor,
                 g: torch.Generator | None = None) -> VoxelCloud:
        """Network input of an augmented frame; `g` draws the coordinate jitter (augment.jitter)."""
        points = aug.points(fp.points, center)
        if g is not None:
            points = self.cfg.augment.jittered(points, g)
        normals = None if fp.normals is None else aug.normals(fp.normals)
        feats = point_inputs(self.cfg.inputs, aug.colors(fp.colors), points, normals)
        return voxelize_cloud(points, feats, self.cfg.voxel_size)

    def _subsample(self, fp: FramePoints, g: torch.Generator, thin_cell: float = 0.0) -> FramePoints:
        """Thinning (augment.thin: one random point per grid cell), then at most max_points."""
        if thin_cell > 0 and fp.points.shape[0]:
            fp = _take(fp, random_grid_sample(fp.points, thin_cell, g).sort().values)
        m = self.cfg.max_points
        if m is None or fp.points.shape[0] <= m:
            return fp
        return _take(fp, torch.randperm(fp.points.shape[0], generator=g)[:m].sort().values)

    # ------------------------------------------------------------------ pairs

    def partner_index(self, scene_index: int, frame_index: int, g: torch.Generator) -> int:
        n = len(self.scenes[scene_index])
        lo, hi = self.cfg.pair_offset
        hi = min(hi, n - 1)
        if n == 1 or hi < max(lo, 1):
            return frame_index
        lo = max(lo, 1)
        offset = int(torch.randint(lo, hi + 1, (1,), generator=g))
        sign = 1 if int(torch.randint(0, 2, (1,), generator=g)) else -1
        j = frame_index + sign * offset
        if not 0 <= j < n:
            j = frame_index - sign * offset
        return int(min(max(j, 0), n - 1))

    def get(self, index: int, generator: torch.Generator) -> Stage1Sample:
        si, fi = self.items[index]
        fj = self.partner_index(si, fi, generator)
        thin = self.cfg.augment.thin_cell(generator)  # one density for both frames of the pair
        a = self._subsample(self.load_frame(si, fi), generator, thin)
        b = self._subsample(self.load_frame(si, fj), generator, thin)
        pairs = match_frames(a.points, b.points, self.cfg.match_voxel, self.cfg.max_pairs, generator)
        if self.paste_bank:  # after matching: pasted points have no partner in frame b
            a = self.paste_entities(a, generator, thin)
        # Joint vocabulary of the two frames, restricted to entities that occur.
        present = sorted({a.names[k] for k in a.labels[a.labels >= 0].unique().tolist()}
                         | {b.names[k] for k in b.labels[b.labels >= 0].unique().tolist()})
        lookup = {name: i for i, name in enumerate(present)}
        aug = Augmentation.sample(self.cfg.augment, generator)
        center = a.points.mean(dim=0) if a.points.shape[0] else torch.zeros(3)
        scene = self.scenes[si]
        return Stage1Sample(
            cloud_a=self.voxelize(a, aug, center, generator),
            cloud_b=self.voxelize(b, aug, center, generator),
            labels_a=remap_labels(a.labels, a.names, lookup),
            labels_b=remap_labels(b.labels, b.names, lookup),
            names=present,
            pairs=pairs,
            frames=(str(scene.root), scene.frame_ids[fi], scene.frame_ids[fj]),
        )

    def collate(self, samples: list[Stage1Sample]) -> LabelledBatch:
        return collate_stage1(samples)

    def paste_entities(self, fp: FramePoints, g: torch.Generator, thin_cell: float) -> FramePoints:
        """`fp` with `paste.count` rare entities appended (PasteConfig); its own rows stay first, in order."""
        if fp.points.shape[0] == 0:
            return fp
        names = list(self.paste_bank)
        points, colors, normals, labels, vocab = [fp.points], [fp.colors], [fp.normals], [fp.labels], list(fp.names)
        for _ in range(self.cfg.paste.count):
            name = names[int(torch.randint(len(names), (1,), generator=g))]
            shown = self.paste_bank[name]
            src = self.load_frame(*shown[int(torch.randint(len(shown), (1,), generator=g))])
            part = _take(src, torch.nonzero(src.labels == src.names.index(name)).squeeze(1))
            part = self._subsample(part, g, thin_cell)
            angle = float(torch.rand((), generator=g, dtype=torch.float64)) * 2 * math.pi
            target = fp.points[int(torch.randint(fp.points.shape[0], (1,), generator=g))]
            moved = turned(part.points, angle)
            moved = moved + torch.cat([target[:2] - moved[:, :2].mean(dim=0), moved.new_zeros(1)])
            if name not in vocab:
                vocab.append(name)
            points.append(moved)
            colors.append(part.colors)
            normals.append(None if part.normals is None else part.normals @ rotation_z(angle).T)
            labels.append(torch.full((moved.shape[0],), vocab.index(name), dtype=torch.int64))
        return FramePoints(torch.cat(points), torch.cat(colors), None if fp.normals is None else torch.cat(normals),
                           torch.cat(labels), vocab)


def _take(fp: FramePoints, keep: torch.Tensor) -> FramePoints:
    return FramePoints(fp.points[keep], fp.colors[keep], None if fp.normals is None else fp.normals[keep],
                       fp.labels[keep], fp.names)


def collate_stage1(samples: list[Stage1Sample]) -> LabelledBatch:
    vocabulary, lookup = batch_vocabulary(s.names for s in samples)
    clouds, labels, pairs = [], [], []
    for s in samples:
        clouds += [s.cloud_a, s.cloud_b]
        labels += [remap_labels(s.labels_a, s.names, lookup), remap_labels(s.labels_b, s.names, lookup)]
    offsets = point_offsets(clouds)
    for k, s in enumerate(samples):
        if s.pairs.shape[0]:
            pairs.append(s.pairs + torch.tensor([offsets[2 * k], offsets[2 * k + 1]]))
    return LabelledBatch(
        sparse=collate_clouds(clouds),
        labels=torch.cat(labels),
        vocabulary=vocabulary,
        pairs=torch.cat(pairs) if pairs else torch.zeros((0, 2), dtype=torch.int64),
    )


def scene_paths(root: str | os.PathLike) -> list[Path]:
    """Scene folders directly under `root` (those holding color/, depth/ and pose/), sorted."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and all((p / d).is_dir() for d in ("color", "depth", "pose")))
