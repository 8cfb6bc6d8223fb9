"""`VoxelMap`: the accumulating sparse voxel map of the online node.

Per voxel it stores the packed voxel key, the running mean of its points (float32 xyz), the
running mean colour (float32 rgb), the observation count, the index of the frame that last
observed it and a "changed since the last network pass" flag — 41 bytes — plus, once a network
pass has run, a 16-bit feature vector: float16 on CUDA, bfloat16 on CPU by default, because
x86 CPUs with AVX512-BF16/AMX multiply bf16 about 2.5x faster than fp16 (measured: 1M x 512
features against 20 texts, 61 ms in bf16 vs 146 ms in fp16 on 2 cores), at the same memory.

Storage is slot-ordered (append-only, compacted on eviction) with a separate sorted key index
(`_sorted_keys` → `_sorted_slots`), so integrating a frame costs one unique over the frame's
points, one binary search of its voxels in the index and an O(N) merge only when new voxels
appear.

Eviction rule: when the map would exceed `max_voxels`, the least recently observed voxels
(oldest `last_seen`, ties broken by fewer observations) are dropped until the map holds
`(1 - evict_fraction) * max_voxels`, so eviction runs rarely rather than on every frame once the
cap is reached. The frame just integrated is never evicted unless it alone exceeds the cap.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.fileio import atomic_write
from pgov3d_core.geometry import backproject, pack_keys, voxel_coords

log = logging.getLogger(__name__)

MAP_FORMAT_VERSION = 1


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


class VoxelMap:
    def __init__(
        self,
        voxel_size: float = 0.02,
        max_voxels: int = 2_000_000,
        max_depth: float | None = None,
        stride: int = 1,
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
        self.stride = int(stride)
        self.evict_fraction = float(evict_fraction)
        self.device = torch.device(device)
        if feature_dtype == "auto":
            feature_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        elif isinstance(feature_dtype, str):
            feature_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[feature_dtype]
        if feature_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"feature_dtype must be float16 or bfloat16, got {feature_dtype}")
        self.feature_dtype = feature_dtype
        # Per-voxel votes of per-pixel class labels (frames with `labels`), when > 0 classes.
        self.num_label_classes = int(num_label_classes)
        self.frames_integrated = 0
        self.clear()

    # ------------------------------------------------------------------ state

    def clear(self) -> None:
        """Drop every voxel and feature (settings are kept)."""
        dev = self.device
        self._n = 0
        self._keys = torch.empty(0, dtype=torch.int64, device=dev)
        # Mean position (xyz) and mean colour (rgb) side by side: one gather and one scatter per frame.
        self._stats = torch.empty((0, 6), dtype=torch.float32, device=dev)
        self._count = torch.empty(0, dtype=torch.int32, device=dev)
        self._last_seen = torch.empty(0, dtype=torch.int32, device=dev)
        self._changed = torch.empty(0, dtype=torch.bool, device=dev)
        self._features: torch.Tensor | None = None  # (capacity, D) feature_dtype
        self._has_feature = torch.empty(0, dtype=torch.bool, device=dev)
        self._votes = torch.empty((0, self.num_label_classes), dtype=torch.int32, device=dev)
        self._sorted_keys = torch.empty(0, dtype=torch.int64, device=dev)
        self._sorted_slots = torch.empty(0, dtype=torch.int64, device=dev)
        self.frames_integrated = 0

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        return int(self._keys.shape[0])

    def keys(self) -> torch.Tensor:
        return self._keys[: self._n]

    def points(self) -> torch.Tensor:
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
    def features(self) -> torch.Tensor | None:
        """(N, D) 16-bit per-voxel features (rows without a feature are zero), or None."""
        return None if self._features is None else self._features[: self._n]

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
        per = (
            self._keys.element_size()
            + 6 * self._stats.element_size()
            + self._count.element_size()
            + self._last_seen.element_size()
            + self._changed.element_size()
            + 2 * self._sorted_keys.element_size()  # the sorted index: key + slot
        )
        if include_features and self._features is not None:
            per += self._features.shape[1] * self._features.element_size() + 1
        return float(per)

    # ------------------------------------------------------------------ integration

    def integrate(self, frame: Frame) -> IntegrateStats:
        """Add a posed RGB-D frame. Raises FrameError (map unchanged) for an unusable frame."""
        frame.validate()
        depth = torch.from_numpy(np.require(frame.depth, np.float32, ["C", "W"])).to(self.device)
        points, pixel_index = backproject(depth, frame.K, frame.pose, self.stride, max_depth=self.max_depth)
        if points.shape[0] == 0:
            raise FrameError(f"frame {frame.frame_id!r}: no valid depth pixels")
        color = torch.from_numpy(np.require(frame.color, np.uint8, ["C", "W"])).to(self.device).reshape(-1, 3)
        colors = color[pixel_index].to(torch.float32)
        labels = None
        if frame.labels is not None and self.num_label_classes:
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
        uniq, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        m = uniq.shape[0]
        sums = torch.zeros((m, 6), dtype=torch.float32, device=self.device)
        sums.index_add_(0, inverse, torch.cat([points, colors], dim=1))

        slots, is_new = self._lookup(uniq)
        n_new = int(is_new.sum())
        if n_new:
            new_keys = uniq[is_new]
            first = self._n
            self._reserve(first + n_new)
            new_slots = torch.arange(first, first + n_new, device=self.device)
            slots[is_new] = new_slots
            self._keys[new_slots] = new_keys
            self._count[new_slots] = 0
            self._stats[new_slots] = 0
            self._has_feature[new_slots] = False
            self._votes[new_slots] = 0
            if self._features is not None:
                self._features[new_slots] = 0
            self._n = first + n_new
            self._index_insert(new_keys, new_slots)

        old_count = self._count[slots]
        old = old_count.to(torch.float32)[:, None]
        total = old + counts.to(torch.float32)[:, None]
        self._stats[slots] = (self._stats[slots] * old + sums) / total  # running means
        self._count[slots] = (old_count.to(torch.int64) + counts).clamp(max=2**31 - 1).to(torch.int32)
        self.frames_integrated += 1
        self._last_seen[slots] = self.frames_integrated
        self._changed[slots] = True
        if labels is not None and self.num_label_classes:
            ok = (labels >= 0) & (labels < self.num_label_classes)
            self._votes.index_put_((slots[inverse[ok]], labels[ok]),
                                   torch.ones(int(ok.sum()), dtype=torch.int32, device=self.device), accumulate=True)

        evicted = 0
        if self._n > self.max_voxels:
            evicted = self._evict(int(self.max_voxels * (1.0 - self.evict_fraction)))
        return IntegrateStats(int(points.shape[0]), m, n_new, evicted)

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

        self._keys = grow(self._keys)
        self._stats = grow(self._stats)
        self._count = grow(self._count)
        self._last_seen = grow(self._last_seen)
        self._changed = grow(self._changed)
        self._has_feature = grow(self._has_feature)
        self._votes = grow(self._votes)
        if self._features is not None:
            self._features = grow(self._features)

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
        for name in ("_keys", "_stats", "_count", "_last_seen", "_changed", "_has_feature", "_votes"):
            t = getattr(self, name)
            t[:kept] = t[:n][keep]
        if self._features is not None:
            self._features[:kept] = self._features[:n][keep]
        index_keep = keep[self._sorted_slots]
        self._sorted_keys = self._sorted_keys[index_keep]
        self._sorted_slots = new_slot[self._sorted_slots[index_keep]]
        self._n = kept

    # ------------------------------------------------------------------ features and query

    def set_features(self, slots: torch.Tensor, features: torch.Tensor) -> None:
        """Store network features (L2-normalised here) for voxel rows `slots`, in place (16-bit)."""
        slots = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
        features = torch.as_tensor(features, device=self.device)
        if features.ndim != 2 or features.shape[0] != slots.shape[0]:
            raise ValueError(f"features must be ({slots.shape[0]}, D), got {tuple(features.shape)}")
        if slots.numel() and (slots.min() < 0 or slots.max() >= self._n):
            raise IndexError(f"voxel rows out of range [0, {self._n})")
        if self._features is None:
            self._features = torch.zeros((self.capacity, features.shape[1]), dtype=self.feature_dtype,
                                         device=self.device)
        elif features.shape[1] != self._features.shape[1]:
            raise ValueError(f"feature dim {features.shape[1]} != map's {self._features.shape[1]}")
        normed = torch.nn.functional.normalize(features.to(torch.float32), dim=1)
        self._features[slots] = normed.to(self.feature_dtype)
        self._has_feature[slots] = True
        self._changed[slots] = False

    def query(self, text_embeddings, min_score: float = 0.0, chunk: int = 65536) -> QueryResult:
        """Cosine similarity of every voxel feature with each text embedding (Q, D); per voxel the
        argmax text and its score; label -1 below `min_score` or without a feature.

        The product runs in the features' 16-bit type (no fp32 copy of the feature matrix: at 1M
        voxels x 512 that copy alone would cost more than the product), so scores carry 16-bit
        precision (about 3 significant digits in bf16)."""
        text = torch.as_tensor(text_embeddings, dtype=torch.float32, device=self.device)
        if text.ndim == 1:
            text = text[None]
        if text.ndim != 2 or text.shape[0] == 0:
            raise ValueError(f"text embeddings must be (Q, D) with Q ≥ 1, got {tuple(text.shape)}")
        if self._features is None:
            raise ValueError("the map has no features yet (the 3D network has not run)")
        if text.shape[1] != self._features.shape[1]:
            raise ValueError(f"text embedding dim {text.shape[1]} != feature dim {self._features.shape[1]}")
        text_t = torch.nn.functional.normalize(text, dim=1).to(self._features.dtype).T.contiguous()
        n = self._n
        scores = torch.empty(n, dtype=torch.float32, device=self.device)
        labels = torch.empty(n, dtype=torch.int64, device=self.device)
        has = self._has_feature[:n]
        best = torch.full((text.shape[0],), float("-inf"), device=self.device)
        for start in range(0, n, chunk):  # chunks keep the (rows, Q) similarity cache-sized
            stop = min(n, start + chunk)
            sim = self._features[start:stop] @ text_t
            s, lab = sim.max(dim=1)
            scores[start:stop] = s
            labels[start:stop] = lab
            rows = has[start:stop]
            if bool(rows.all()):
                best = torch.maximum(best, sim.max(dim=0).values.float())
            elif bool(rows.any()):
                best = torch.maximum(best, sim[rows].max(dim=0).values.float())
        missing = ~has
        scores[missing] = float("nan")
        labels[missing | (scores < min_score)] = -1
        return QueryResult(labels, scores, best)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, np.ndarray]:
        n = self._n
        state = {
            "format_version": np.array(MAP_FORMAT_VERSION),
            "voxel_size": np.array(self.voxel_size),
            "max_voxels": np.array(self.max_voxels),
            "frames_integrated": np.array(self.frames_integrated),
            "keys": self._keys[:n].cpu().numpy(),
            "position": self._stats[:n, :3].cpu().numpy(),
            "color": self._stats[:n, 3:].cpu().numpy(),
            "count": self._count[:n].cpu().numpy(),
            "last_seen": self._last_seen[:n].cpu().numpy(),
            "changed": self._changed[:n].cpu().numpy(),
            "has_feature": self._has_feature[:n].cpu().numpy(),
            "votes": self._votes[:n].cpu().numpy(),
        }
        if self._features is not None:
            feats = self._features[:n].cpu()
            if feats.dtype == torch.bfloat16:  # numpy has no bfloat16: store the raw 16-bit words
                state["features"] = feats.view(torch.int16).numpy()
                state["features_bf16"] = np.array(True)
            else:
                state["features"] = feats.numpy()
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
        kwargs = {"voxel_size": float(state["voxel_size"]), "max_voxels": int(state["max_voxels"]),
                  "num_label_classes": int(state["votes"].shape[1]) if "votes" in state else 0}
        kwargs.update(overrides)
        vmap = cls(device=device, **kwargs)
        n = state["keys"].shape[0]
        vmap._reserve(n)
        dev = vmap.device
        vmap._keys[:n] = torch.from_numpy(state["keys"]).to(dev)
        vmap._stats[:n, :3] = torch.from_numpy(state["position"]).to(dev)
        vmap._stats[:n, 3:] = torch.from_numpy(state["color"]).to(dev)
        vmap._count[:n] = torch.from_numpy(state["count"]).to(dev)
        vmap._last_seen[:n] = torch.from_numpy(state["last_seen"]).to(dev)
        vmap._changed[:n] = torch.from_numpy(state["changed"]).to(dev)
        vmap._has_feature[:n] = torch.from_numpy(state["has_feature"]).to(dev)
        if "votes" in state and vmap.num_label_classes == state["votes"].shape[1]:
            vmap._votes[:n] = torch.from_numpy(state["votes"]).to(dev)
        if "features" in state:
            feats = torch.from_numpy(state["features"])
            if "features_bf16" in state:
                feats = feats.view(torch.bfloat16)
            vmap._features = torch.zeros((vmap.capacity, feats.shape[1]), dtype=vmap.feature_dtype, device=dev)
            vmap._features[:n] = feats.to(dev, vmap.feature_dtype)
        vmap._n = n
        order = torch.argsort(vmap._keys[:n])
        vmap._sorted_keys = vmap._keys[:n][order].clone()
        vmap._sorted_slots = order
        vmap.frames_integrated = int(state["frames_integrated"])
        return vmap
