"""`VoxelMap`: the accumulating sparse voxel map of the online node.

Per voxel it stores the arrays of the field table `FIELDS`: the packed voxel key, the running
mean of its points (float32 xyz), the running mean colour (float32 rgb), the observation count,
the index of the frame that last observed it and a "changed since the last network pass" flag —
41 bytes — the per-class label votes (none by default) and, once a network pass has run, a
"has a feature" flag and a feature vector in one of `query_kernels.STORAGE_MODES`: float16 or bfloat16 by
default ("auto": float16 on CUDA; on CPU whichever 16-bit type queries faster *on this CPU*,
measured once per process — bf16 where AVX512-BF16/AMX make it native, float16 elsewhere),
float32 on request, or the compact int8 mode (per-voxel scale; about half the memory, top-1
agreement with float32 measured in bench/bench_map.py). The query kernel is chosen the same way
(`query_kernels.choose_kernel`).

Storage is slot-ordered (append-only, compacted on eviction) with a separate sorted key index
(`_sorted_keys` → `_sorted_slots`), so integrating a frame costs one pass over its pixels
(back-projection, keys and the merge of consecutive equal keys: `frame_kernel` on CPU, torch ops
elsewhere), one unique over the merged runs, one binary search of its voxels in the index and an
O(N) merge only when new voxels appear.

Eviction rule: when the map would exceed `max_voxels`, the least recently observed voxels
(oldest `last_seen`, ties broken by fewer observations) are dropped until the map holds
`(1 - evict_fraction) * max_voxels`, so eviction runs rarely rather than on every frame once the
cap is reached. The frame just integrated is never evicted unless it alone exceeds the cap.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgov3d_core import frame_kernel
from pgov3d_core import query_kernels as qk
from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.fileio import atomic_write
from pgov3d_core.geometry import backproject, pack_keys, voxel_coords

log = logging.getLogger(__name__)

MAP_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VoxelField:
    """One per-voxel array of `VoxelMap`: attribute `_<name>`, one row per slot.

    width: None for one value per voxel (shape (capacity,)), an int for that many columns, or the
    name of the VoxelMap attribute that holds the column count (which may be 0). dtype None: the
    feature storage mode's dtype. saved_as: the keys of the field in map files with the columns
    each holds (default: the name, every column). feature: part of the feature storage, counted
    by bytes_per_voxel only with include_features. lazy: allocated with the first features (None
    until then, see `VoxelMap._allocate_features`)."""

    name: str
    dtype: torch.dtype | None
    width: int | str | None = None
    saved_as: tuple[tuple[str, slice], ...] | None = None
    feature: bool = False
    lazy: bool = False

    @property
    def attr(self) -> str:
        return "_" + self.name

    def columns(self) -> tuple[tuple[str, slice], ...]:
        return self.saved_as or ((self.name, slice(None)),)


# Every per-voxel array (VoxelMap.fields). clear, growth, new slots, compaction, bytes_per_voxel,
# state_dict and load all read this table: a new field is one more line (saved under its name;
# files written before it existed load with the field at zero).
FIELDS: tuple[VoxelField, ...] = (
    VoxelField("keys", torch.int64),
    # Mean position (xyz) and mean colour (rgb) side by side: one gather and one scatter per frame.
    VoxelField("stats", torch.float32, 6, saved_as=(("position", slice(0, 3)), ("color", slice(3, 6)))),
    VoxelField("count", torch.int32),
    VoxelField("last_seen", torch.int32),
    VoxelField("changed", torch.bool),
    VoxelField("has_feature", torch.bool, feature=True),
    VoxelField("votes", torch.int32, "num_label_classes"),  # per-pixel label votes per class
    VoxelField("features", None, "feature_dim", feature=True, lazy=True),  # (capacity, D) storage dtype
    VoxelField("feature_scale", torch.float32, feature=True, lazy=True),  # int8 storage only
)


@dataclass
class EncodedFeatures:
    """Features in a map's storage mode (`VoxelMap.encode_features`): values (R, D) of the storage
    dtype, per-row int8 scales (R,) or None, and the storage mode they were encoded for."""

    values: torch.Tensor
    scale: torch.Tensor | None
    storage: str

    def take(self, rows: torch.Tensor) -> EncodedFeatures:
        """The rows `rows` (an index or a boolean mask) of these features."""
        return EncodedFeatures(self.values[rows], None if self.scale is None else self.scale[rows], self.storage)


@dataclass
class IntegrateStats:
    points: int
    voxels_touched: int
    voxels_new: int
    voxels_evicted: int


@dataclass
class QueryResult:
    """labels: (N,) int64 index of the best text per voxel, -1 when below min_score or when the
    voxel has no feature yet; scores: (N,) float32 best cosine similarity (NaN without feature);
    best_scores: (Q,) float32 highest score of each text over the map (-inf if none)."""

    labels: torch.Tensor
    scores: torch.Tensor
    best_scores: torch.Tensor


def select_points(result: QueryResult, max_points: int) -> torch.Tensor:
    """Rows (ascending, int64) of at most `max_points` voxels to return for a query result; 0 or a
    cap at least the map's size returns every row (the whole map, as before the cap existed).

    Under a cap, every text gets an equal share of its highest-scoring voxels (a small object
    asked beside "floor" is not crowded out); shares a text cannot fill (fewer voxels carry its
    label) go to the others in the same way, and what labelled voxels cannot fill is spread
    evenly over the unlabelled ones (label -1), which keeps the scene's context visible."""
    labels, scores = result.labels, result.scores
    n = int(labels.shape[0])
    if max_points < 0:
        raise ValueError(f"max_points must be >= 0 (0 = all), got {max_points}")
    if max_points == 0 or n <= max_points:
        return torch.arange(n, device=labels.device)
    q = int(result.best_scores.shape[0])
    lab = labels.cpu().numpy()
    # One stable O(N) grouping of voxels by label (numpy radix-sorts 16-bit keys); -1 first.
    order = np.argsort(lab.astype(np.int16 if q < 2**15 else np.int32), kind="stable")
    counts = np.bincount(lab + 1, minlength=q + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    # Water-filling: texts with fewer voxels than an equal share keep them all; the rest split the remainder.
    quota = np.zeros(q + 1, np.int64)
    left = max_points
    groups = np.argsort(counts[1:], kind="stable") + 1
    for i, g in enumerate(groups):
        quota[g] = min(counts[g], left // (len(groups) - i))  # the last one served takes the remainder
        left -= quota[g]
    quota[0] = min(counts[0], left)
    chosen = []
    score_np = scores.cpu().numpy()
    for g in range(q + 1):
        rows = order[starts[g]: starts[g + 1]]
        k = int(quota[g])
        if k == 0:
            continue
        if k < len(rows):
            if g == 0:  # unlabelled: an even stride through map order
                rows = rows[np.linspace(0, len(rows) - 1, k).round().astype(np.int64)]
            else:
                rows = rows[np.argpartition(-score_np[rows], k - 1)[:k]]
        chosen.append(rows)
    out = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return torch.from_numpy(out.astype(np.int64)).to(labels.device)


class VoxelMap:
    # The per-voxel field table (a subclass may extend it: `fields = FIELDS + (VoxelField(...),)`).
    fields: tuple[VoxelField, ...] = FIELDS

    def __init__(
        self,
        voxel_size: float = 0.02,
        max_voxels: int = 2_000_000,
        max_depth: float | None = None,
        pixel_stride: int = 1,
        evict_fraction: float = 0.05,
        device: str | torch.device = "cpu",
        feature_dtype: str | torch.dtype = "auto",
        num_label_classes: int = 0,
    ):
        if voxel_size <= 0:
            raise ValueError(f"voxel_size must be positive, got {voxel_size}")
        if max_voxels <= 0:
            raise ValueError(f"max_voxels must be positive, got {max_voxels}")
        if not 0.0 < evict_fraction < 1.0:
            raise ValueError(f"evict_fraction must be in (0, 1), got {evict_fraction}")
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.max_depth = max_depth
        self.pixel_stride = int(pixel_stride)
        self.evict_fraction = float(evict_fraction)
        self.device = torch.device(device)
        # "auto" is resolved when the feature dimension is known (the first set_features / load).
        self._storage = qk.storage_mode(feature_dtype)
        # Per-voxel votes of per-pixel class labels (frames with `labels`), when > 0 classes.
        self.num_label_classes = int(num_label_classes)
        # Frames or point sets integrated since the last clear, saved with the map: the clock of
        # `last_seen` for eviction. (The node's status "frames_integrated" is another count: the
        # frames its OnlineMapper integrated in this process.)
        self.integrations = 0
        self.clear()

    # ------------------------------------------------------------------ state

    def clear(self) -> None:
        """Drop every voxel and feature (settings are kept)."""
        dev = self.device
        self._n = 0
        for f in self.fields:
            setattr(self, f.attr, None if f.lazy else
                    torch.zeros((0, *self._row_shape(f)), dtype=f.dtype, device=dev))
        self._sorted_keys = torch.empty(0, dtype=torch.int64, device=dev)
        self._sorted_slots = torch.empty(0, dtype=torch.int64, device=dev)
        self.integrations = 0

    def _row_shape(self, f: VoxelField) -> tuple[int, ...]:
        if f.width is None:
            return ()
        return (int(getattr(self, f.width)) if isinstance(f.width, str) else f.width,)

    def _arrays(self) -> list[tuple[VoxelField, torch.Tensor]]:
        """The allocated per-voxel arrays, in table order."""
        return [(f, t) for f in self.fields if (t := getattr(self, f.attr)) is not None]

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return int(self._keys.shape[0])

    def keys(self) -> torch.Tensor:
        return self._keys[: self._n]

    def voxel_means(self) -> torch.Tensor:
        """(N, 3) float32 mean position of the points that fell in each voxel."""
        return self._stats[: self._n, :3]

    def colors(self) -> torch.Tensor:
        """(N, 3) uint8 mean colour."""
        return self._stats[: self._n, 3:].round().clamp(0, 255).to(torch.uint8)

    def counts(self) -> torch.Tensor:
        return self._count[: self._n]

    def last_seen(self) -> torch.Tensor:
        return self._last_seen[: self._n]

    @property
    def feature_dim(self) -> int | None:
        return None if self._features is None else int(self._features.shape[1])

    @property
    def feature_storage(self) -> str:
        """One of query_kernels.STORAGE_MODES, or "auto" until the first features are stored."""
        return self._storage

    @property
    def feature_dtype(self) -> torch.dtype | None:
        """dtype of the stored feature values (None while the storage is still "auto")."""
        return qk.STORAGE_DTYPES.get(self._storage)

    @property
    def features(self) -> torch.Tensor | None:
        """(N, D) per-voxel features (rows without a feature are zero), or None: the stored tensor
        itself for float storage, a dequantised float32 copy for int8."""
        if self._features is None:
            return None
        if self._feature_scale is not None:
            return qk.decode(self._features[: self._n], self._feature_scale[: self._n])
        return self._features[: self._n]

    def has_feature(self) -> torch.Tensor:
        return self._has_feature[: self._n]

    def label_votes(self) -> torch.Tensor:
        """(N, num_label_classes) int32 per-voxel counts of per-pixel labels."""
        return self._votes[: self._n]

    def majority_labels(self) -> torch.Tensor:
        """(N,) int64 most-voted class per voxel, -1 where no labelled pixel fell."""
        votes = self.label_votes()
        if votes.shape[1] == 0:
            return torch.full((self._n,), -1, dtype=torch.int64, device=self.device)
        best, label = votes.max(dim=1)
        return torch.where(best > 0, label, torch.full_like(label, -1))

    def set_features_from_labels(self, class_embeddings: torch.Tensor) -> int:
        """Features of every voxel with label votes := the embedding of its majority class (the
        "oracle" feature mode: ground-truth labels instead of a 3D network). Returns the count."""
        labels = self.majority_labels()
        rows = torch.nonzero(labels >= 0).squeeze(1)
        if len(rows):
            self.set_features(rows, torch.as_tensor(class_embeddings, device=self.device)[labels[rows]])
        return int(len(rows))

    def changed(self) -> torch.Tensor:
        """(N,) bool: voxels integrated since their feature was last set."""
        return self._changed[: self._n]

    def bytes_per_voxel(self, include_features: bool = False) -> float:
        """Bytes of storage per voxel: every allocated field of `fields` plus the sorted index
        (key + slot); the feature fields only with `include_features` once features exist."""
        per = 2 * self._sorted_keys.element_size()
        with_features = include_features and self._features is not None
        for f, t in self._arrays():
            if with_features or not f.feature:
                per += math.prod(t.shape[1:]) * t.element_size()
        return float(per)

    # ------------------------------------------------------------------ integration

    def integrate(self, frame: Frame) -> IntegrateStats:
        """Add a posed RGB-D frame. Raises FrameError (map unchanged) for an unusable frame."""
        frame.validate()  # the one validation: K, pose, shapes and dtypes
        want_labels = frame.labels is not None and self.num_label_classes > 0
        if self.device.type == "cpu" and frame_kernel.available():
            # One fused pass over the pixels (see frame_kernel); same result as the torch path below.
            try:
                runs = frame_kernel.frame_runs(frame.depth, frame.color, frame.labels if want_labels else None,
                                               frame.K, frame.pose, self.pixel_stride, 0.0, self.max_depth,
                                               self.voxel_size)
            except ValueError as exc:
                raise FrameError(f"frame {frame.frame_id!r}: {exc}") from exc
            if runs["n_points"] == 0:
                raise FrameError(f"frame {frame.frame_id!r}: no valid depth pixels")
            point_run = point_labels = None
            if want_labels:
                point_run = torch.from_numpy(runs["point_run"])
                point_labels = torch.from_numpy(runs["point_label"])
            return self._accumulate_runs(torch.from_numpy(runs["run_keys"]), torch.from_numpy(runs["run_sums"]),
                                         torch.from_numpy(runs["run_counts"]), runs["n_points"],
                                         point_run, point_labels)
        depth = torch.from_numpy(np.require(frame.depth, np.float32, ["C", "W"])).to(self.device)
        points, pixel_index = backproject(depth, frame.K, frame.pose, self.pixel_stride, max_depth=self.max_depth)
        if points.shape[0] == 0:
            raise FrameError(f"frame {frame.frame_id!r}: no valid depth pixels")
        color = torch.from_numpy(np.require(frame.color, np.uint8, ["C", "W"])).to(self.device).reshape(-1, 3)
        colors = color[pixel_index].to(torch.float32)
        labels = None
        if want_labels:
            labels = torch.from_numpy(np.asarray(frame.labels, np.int64).reshape(-1)).to(self.device)[pixel_index]
        return self.integrate_points(points, colors, labels)

    def integrate_points(self, points: torch.Tensor, colors: torch.Tensor,
                         labels: torch.Tensor | None = None) -> IntegrateStats:
        """Add world points (N, 3) float32 with colours (N, 3) float 0–255 as one observation, and
        optionally per-point class labels (N,) (votes; -1 and ids ≥ num_label_classes ignored)."""
        points = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        colors = torch.as_tensor(colors, dtype=torch.float32, device=self.device)
        if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
            raise ValueError(f"points and colors must both be (N, 3), got {tuple(points.shape)}, {tuple(colors.shape)}")
        if points.shape[0] == 0:
            return IntegrateStats(0, 0, 0, 0)
        keys = pack_keys(voxel_coords(points, self.voxel_size))
        values = torch.cat([points, colors], dim=1)
        # The sort inside torch.unique dominates integration. Points in image order repeat their
        # voxel along a row (a 2 cm voxel spans several pixels), so runs of equal consecutive keys
        # are merged first (one comparison and one cumsum) and only the run keys are sorted: 2-3x
        # fewer on 640x480 frames. Unordered input only pays the comparison.
        starts = torch.ones(keys.shape[0], dtype=torch.bool, device=self.device)
        torch.ne(keys[1:], keys[:-1], out=starts[1:])
        run = torch.cumsum(starts, 0) - 1
        run_keys = keys[starts]
        run_begin = torch.nonzero(starts).squeeze(1)
        run_counts = torch.diff(run_begin, append=torch.tensor([keys.shape[0]], device=self.device))
        run_sums = torch.zeros((run_keys.shape[0], 6), dtype=torch.float32, device=self.device)
        run_sums.index_add_(0, run, values)
        return self._accumulate_runs(run_keys, run_sums, run_counts, int(points.shape[0]),
                                     run if labels is not None else None, labels)

    def _accumulate_runs(self, run_keys: torch.Tensor, run_sums: torch.Tensor, run_counts: torch.Tensor,
                         n_points: int, point_run: torch.Tensor | None,
                         point_labels: torch.Tensor | None) -> IntegrateStats:
        """Merge one observation, given as runs of points sharing a voxel (keys (R,), sums of xyz
        and rgb (R, 6), point counts (R,)), into the map; optional per-point run index and label."""
        uniq, run_inverse = torch.unique(run_keys, return_inverse=True)
        m = uniq.shape[0]
        sums = torch.zeros((m, 6), dtype=torch.float32, device=self.device).index_add_(0, run_inverse, run_sums)
        counts = torch.zeros(m, dtype=torch.int64, device=self.device).index_add_(0, run_inverse, run_counts)

        slots, is_new = self._lookup(uniq)
        n_new = int(is_new.sum())
        if n_new:
            new_keys = uniq[is_new]
            first = self._n
            self._reserve(first + n_new)
            new_slots = torch.arange(first, first + n_new, device=self.device)
            slots[is_new] = new_slots
            for _, t in self._arrays():
                t[new_slots] = 0
            self._keys[new_slots] = new_keys
            self._n = first + n_new
            self._index_insert(new_keys, new_slots)

        old_count = self._count[slots]
        old = old_count.to(torch.float32)[:, None]
        total = old + counts.to(torch.float32)[:, None]
        self._stats[slots] = (self._stats[slots] * old + sums) / total  # running means
        self._count[slots] = (old_count.to(torch.int64) + counts).clamp(max=2**31 - 1).to(torch.int32)
        self.integrations += 1
        self._last_seen[slots] = self.integrations
        self._changed[slots] = True
        if point_labels is not None and self.num_label_classes:
            labels = point_labels
            ok = (labels >= 0) & (labels < self.num_label_classes)
            inverse = run_inverse[point_run]  # voxel of every point
            self._votes.index_put_((slots[inverse[ok]], labels[ok]),
                                   torch.ones(int(ok.sum()), dtype=torch.int32, device=self.device), accumulate=True)

        evicted = 0
        if self._n > self.max_voxels:
            evicted = self._evict(int(self.max_voxels * (1.0 - self.evict_fraction)))
        return IntegrateStats(n_points, m, n_new, evicted)

    def rows_of(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Current rows of voxel `keys` (any order) and a mask of those still in the map (a voxel
        can be evicted while a network pass computes its feature)."""
        keys = torch.as_tensor(keys, dtype=torch.int64, device=self.device)
        if self._n == 0 or keys.numel() == 0:
            return torch.zeros_like(keys), torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self._sorted_keys, keys).clamp(max=self._n - 1)
        found = self._sorted_keys[pos] == keys
        return torch.where(found, self._sorted_slots[pos], torch.zeros_like(keys)), found

    def _lookup(self, sorted_query_keys: torch.Tensor):
        """Slots of keys already in the map, and a mask of the ones that are new."""
        slots = torch.full_like(sorted_query_keys, -1)
        if self._n == 0:
            return slots, torch.ones_like(sorted_query_keys, dtype=torch.bool)
        pos = torch.searchsorted(self._sorted_keys, sorted_query_keys).clamp(max=self._n - 1)
        found = self._sorted_keys[pos] == sorted_query_keys
        slots[found] = self._sorted_slots[pos[found]]
        return slots, ~found

    def _index_insert(self, new_keys: torch.Tensor, new_slots: torch.Tensor) -> None:
        """Merge sorted new keys into the sorted index in O(N) without re-sorting."""
        old_n = self._sorted_keys.shape[0]
        n_new = new_keys.shape[0]
        where = torch.searchsorted(self._sorted_keys, new_keys) + torch.arange(n_new, device=self.device)
        keep = torch.ones(old_n + n_new, dtype=torch.bool, device=self.device)
        keep[where] = False
        merged_keys = torch.empty(old_n + n_new, dtype=torch.int64, device=self.device)
        merged_slots = torch.empty_like(merged_keys)
        merged_keys[keep] = self._sorted_keys
        merged_slots[keep] = self._sorted_slots
        merged_keys[where] = new_keys
        merged_slots[where] = new_slots
        self._sorted_keys, self._sorted_slots = merged_keys, merged_slots

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        # Geometric growth, but never far beyond the cap: memory stays flat once it is reached.
        new_cap = max(needed, min(int(self.capacity * 1.5) + 1024, self.max_voxels + needed - self._n))

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((new_cap, *t.shape[1:]), dtype=t.dtype, device=t.device)
            out[: self._n] = t[: self._n]
            return out

        for f, t in self._arrays():
            setattr(self, f.attr, grow(t))

    def _evict(self, target: int) -> int:
        n = self._n
        n_drop = n - target
        # Oldest last_seen first; among equals, fewest observations first.
        order = torch.from_numpy(
            np.lexsort((self._count[:n].cpu().numpy(), self._last_seen[:n].cpu().numpy()))
        ).to(self.device)
        keep = torch.ones(n, dtype=torch.bool, device=self.device)
        keep[order[:n_drop]] = False
        self._compact(keep)
        log.debug("evicted %d voxels (map at %d, cap %d)", n_drop, target, self.max_voxels)
        return n_drop

    def _compact(self, keep: torch.Tensor) -> None:
        n = self._n
        new_slot = torch.cumsum(keep, 0) - 1
        kept = int(keep.sum())
        for _, t in self._arrays():
            t[:kept] = t[:n][keep]
        index_keep = keep[self._sorted_slots]
        self._sorted_keys = self._sorted_keys[index_keep]
        self._sorted_slots = new_slot[self._sorted_slots[index_keep]]
        self._n = kept

    # ------------------------------------------------------------------ features and query

    def _allocate_features(self, dim: int) -> None:
        if self._storage == "auto":
            self._storage = qk.choose_storage(dim, self.device.type)
        self._features = torch.zeros((self.capacity, dim), dtype=qk.STORAGE_DTYPES[self._storage],
                                     device=self.device)
        self._feature_scale = (torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
                               if self._storage == "int8" else None)

    def encode_features(self, features: torch.Tensor) -> EncodedFeatures:
        """Float `features` (R, D) L2-normalised and converted to the map's storage mode, without
        touching the map (resolving "auto" storage first: a measurement, once). This is the costly
        part of `set_features` — memory-bound passes over R × D values, 1–3 s for a network pass over
        300k voxels on a 2-core AVX2 EPYC — so a caller that guards the map with a lock (the online
        mapper) encodes before taking it and only the row writes wait for it."""
        features = torch.as_tensor(features, device=self.device)
        if features.ndim != 2:
            raise ValueError(f"features must be (R, D), got {tuple(features.shape)}")
        if self._storage == "auto":
            self._storage = qk.choose_storage(int(features.shape[1]), self.device.type)
        normed = torch.nn.functional.normalize(features.to(torch.float32), dim=1)
        values, scale = qk.encode(normed, self._storage)
        return EncodedFeatures(values, scale, self._storage)

    def set_features(self, slots: torch.Tensor, features: torch.Tensor | EncodedFeatures) -> None:
        """Store network features for voxel rows `slots`, in place, in the map's storage mode:
        float features (L2-normalised here) or the `encode_features` of them."""
        slots = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
        encoded = features if isinstance(features, EncodedFeatures) else self.encode_features(features)
        values = encoded.values
        if values.shape[0] != slots.shape[0]:
            raise ValueError(f"features must be ({slots.shape[0]}, D), got {tuple(values.shape)}")
        if encoded.storage != self._storage:
            raise ValueError(f"features encoded for {encoded.storage} storage, the map stores {self._storage}")
        if slots.numel() and (slots.min() < 0 or slots.max() >= self._n):
            raise IndexError(f"voxel rows out of range [0, {self._n})")
        if self._features is None:
            self._allocate_features(int(values.shape[1]))
        elif values.shape[1] != self._features.shape[1]:
            raise ValueError(f"feature dim {values.shape[1]} != map's {self._features.shape[1]}")
        self._write(slots, encoded)
        self._has_feature[slots] = True
        self._changed[slots] = False

    def _write(self, slots: torch.Tensor, encoded: EncodedFeatures) -> None:
        self._features[slots] = encoded.values
        if encoded.scale is not None:
            self._feature_scale[slots] = encoded.scale

    def query(self, text_embeddings, min_score: float = 0.0, chunk: int | None = None,
              kernel: str | None = None) -> QueryResult:
        """Cosine similarity of every voxel feature with each text embedding (Q, D); per voxel the
        argmax text and its score; label -1 below `min_score` or without a feature.

        The kernel and its block size (`chunk` rows) are the fastest measured on this process's
        CPU for the map's storage mode and Q (query_kernels.choose_kernel) unless given. Scores
        carry the storage's precision (about 3 significant digits in 16-bit, int8 ± 1/127 of a
        voxel's largest component)."""
        text = torch.as_tensor(text_embeddings, dtype=torch.float32, device=self.device)
        if text.ndim == 1:
            text = text[None]
        if text.ndim != 2 or text.shape[0] == 0:
            raise ValueError(f"text embeddings must be (Q, D) with Q ≥ 1, got {tuple(text.shape)}")
        if self._features is None:
            raise ValueError("the map has no features yet (the 3D network has not run)")
        if text.shape[1] != self._features.shape[1]:
            raise ValueError(f"text embedding dim {text.shape[1]} != feature dim {self._features.shape[1]}")
        text = torch.nn.functional.normalize(text, dim=1)
        n = self._n
        if kernel is None or chunk is None:
            best_kernel, best_chunk = qk.choose_kernel(self._storage, int(text.shape[1]), int(text.shape[0]),
                                                       self.device.type)
            kernel, chunk = kernel or best_kernel, chunk or best_chunk
        scale = None if self._feature_scale is None else self._feature_scale[:n]
        has = self._has_feature[:n]
        res = qk.scan(self._features[:n], scale, has, text, kernel, int(chunk))
        scores, labels = res.scores, res.labels
        missing = ~has
        scores[missing] = float("nan")
        labels[missing | (scores < min_score)] = -1
        return QueryResult(labels, scores, res.best)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, np.ndarray]:
        n = self._n
        state = {
            "format_version": np.array(MAP_FORMAT_VERSION),
            "voxel_size": np.array(self.voxel_size),
            "max_voxels": np.array(self.max_voxels),
            "frames_integrated": np.array(self.integrations),  # the file's key (format unchanged)
        }
        for f, t in self._arrays():
            for key, cols in f.columns():
                part = t[:n, cols] if t.ndim == 2 else t[:n]
                part = part.cpu()
                if part.dtype == torch.bfloat16:  # numpy has no bfloat16: store the raw 16-bit words
                    state[key] = part.view(torch.int16).numpy()
                    state[key + "_bf16"] = np.array(True)
                else:
                    state[key] = part.numpy()
        return state

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map to an .npz file atomically (a crash never leaves a half-written map)."""
        state = self.state_dict()
        return atomic_write(path, lambda f: np.savez(f, **state))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **overrides) -> VoxelMap:
        """Read a map written by `save` (no pickle: allow_pickle=False)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable pgov3d map file ({exc})") from None
        version = int(state.get("format_version", -1))
        if version != MAP_FORMAT_VERSION:
            raise ValueError(f"{path}: map format version {version}, expected {MAP_FORMAT_VERSION}")
        if "keys" not in state:
            raise ValueError(f"{path}: not a readable pgov3d map file (no voxel keys)")

        def saved(key: str) -> torch.Tensor:
            value = torch.from_numpy(state[key])
            return value.view(torch.bfloat16) if key + "_bf16" in state else value

        kwargs = {"voxel_size": float(state["voxel_size"]), "max_voxels": int(state["max_voxels"]),
                  "num_label_classes": int(state["votes"].shape[1]) if "votes" in state else 0}
        if "feature_scale" in state:  # a compact map stays compact unless asked otherwise
            kwargs["feature_dtype"] = "int8"
        kwargs.update(overrides)
        vmap = cls(device=device, **kwargs)
        n = state["keys"].shape[0]
        vmap._reserve(n)
        dev = vmap.device
        for f, t in vmap._arrays():  # the fields allocated without features; a missing one stays zero
            for key, cols in f.columns():
                if key not in state:
                    continue
                target = t[:n, cols] if t.ndim == 2 else t[:n]
                value = saved(key)
                if value.shape != target.shape:
                    if isinstance(f.width, str):  # a width the caller chose at load (num_label_classes)
                        continue
                    raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
                target.copy_(value.to(dev))
        vmap._n = n
        if "features" in state:
            feats = saved("features")
            scale = saved("feature_scale") if "feature_scale" in state else None
            vmap._allocate_features(int(feats.shape[1]))
            if feats.dtype == vmap._features.dtype:  # same storage: bit-exact
                vmap._features[:n] = feats.to(dev)
                if scale is not None:
                    vmap._feature_scale[:n] = scale.to(dev)
            else:  # another storage mode: through float32, in blocks (no full fp32 copy of the map)
                for s in range(0, n, 65536):
                    rows = torch.arange(s, min(n, s + 65536), device=dev)
                    part_scale = None if scale is None else scale[s : s + 65536].to(dev)
                    vmap._write(rows, vmap.encode_features(qk.decode(feats[s : s + 65536].to(dev), part_scale)))
        order = torch.argsort(vmap._keys[:n])
        vmap._sorted_keys = vmap._keys[:n][order].clone()
        vmap._sorted_slots = order
        vmap.integrations = int(state["frames_integrated"])
        return vmap
