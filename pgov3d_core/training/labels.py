"""Per-frame pixel-wise entities for training, behind one tiny interface:

    frame_labels(scene, frame_id) -> (label_image int32 (H, W), -1 = none; names: list[str])

label_image[v, u] = k means pixel (u, v) shows entity names[k]. Two sources:

* `OracleLabels`: the scene's ground-truth `label/<id>.png` and its `class_names` (synthetic
  scenes, ScanNet exports) — the upper bound / test source.
* `EntityCacheLabels`: the labelling pipeline's cache `<scene>/entities/<id>.png` (uint16,
  0 = none, k = labels[k − 1]) + `<id>.json` ({"labels": [...], ...}) — the paper's
  MLLM-vocabulary + grounded-mask entities (read with `labelling.entities.read_entities`).

Images come at their stored resolution; `resize_labels` (nearest neighbour) brings them to the
depth resolution when they differ, since points are back-projected from depth pixels.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from pgov3d_core.data.scene import Scene, SceneError


class FrameLabelSource(Protocol):
    name: str

    def frame_labels(self, scene: Scene, frame_id: str) -> tuple[np.ndarray, list[str]]: ...


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an int label image to size = (width, height) with nearest neighbour (no blending)."""
    if (labels.shape[1], labels.shape[0]) == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.int32)


class OracleLabels:
    """Ground-truth per-pixel classes of the scene (`Scene.labels` + `Scene.class_names`)."""

    name = "oracle"

    def frame_labels(self, scene: Scene, frame_id: str) -> tuple[np.ndarray, list[str]]:
        labels = scene.labels(frame_id)
        if labels is None:
            raise SceneError(f"{scene.root}: frame {frame_id} has no label/{frame_id}.png (oracle labels need it)")
        names = list(scene.class_names)
        if labels.size and int(labels.max()) >= len(names):
            raise SceneError(
                f"{scene.root}/label/{frame_id}.png: class id {int(labels.max())} but meta.yaml lists "
                f"{len(names)} class_names"
            )
        return labels.astype(np.int32), names


class EntityCacheLabels:
    """Entities written by the labelling pipeline (`pgov3d_core.labelling.entities`), read with its
    own validating reader, so the cache format has exactly one reader."""

    name = "entities"

    def frame_labels(self, scene: Scene, frame_id: str) -> tuple[np.ndarray, list[str]]:
        from pgov3d_core.labelling.entities import EntityError, read_entities

        try:
            labels, names = read_entities(scene.root, frame_id)
        except EntityError as exc:
            raise SceneError(f"{exc} (run the labelling step for {scene.root})") from None
        return labels.astype(np.int32), [str(n) for n in names]


def make_label_source(cfg: str | dict | None) -> FrameLabelSource:
    """'oracle', 'entities' or {'source': ...}."""
    if cfg is None:
        cfg = "oracle"
    if isinstance(cfg, str):
        cfg = {"source": cfg}
    kind = cfg.get("source", "oracle")
    if kind == "oracle":
        return OracleLabels()
    if kind == "entities":
        return EntityCacheLabels()
    raise ValueError(f"data.labels.source must be 'oracle' or 'entities', got {kind!r}")
