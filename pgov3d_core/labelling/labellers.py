"""Labellers: frames → pixel-wise entities, all with one output format (`EntityResult`).

* `ModelLabeller` ("models"): LLaVA-NeXT → GroundingDINO → SAM → score-ordered merge, the
  annotation-free pipeline of the paper.
* `OracleLabeller` ("oracle"): the scene's ground-truth label images and class names, for
  synthetic scenes and the base-annotated protocol, and as a weights-free stand-in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pgov3d_core.data.frame import Frame
from pgov3d_core.labelling.config import LabellingConfig
from pgov3d_core.labelling.entities import EntityResult, merge_masks
from pgov3d_core.weights import offline_environment, require_weights

log = logging.getLogger(__name__)


class LabellingError(RuntimeError):
    """Labelling cannot proceed (e.g. oracle labels without class names); the message says why."""


class Labeller(Protocol):
    name: str
    identity: str

    def cannot_label(self, frame: Frame) -> str | None: ...

    def label(self, frames: list[Frame], class_names: list[str], scene: str = "") -> list[EntityResult]: ...


def labeller_identity(cfg: LabellingConfig) -> str:
    """What produced a cache entry, computable without loading any model: the labeller, the
    weight file/folder names, and a hash of the settings that change its output. A cached frame
    with another identity is relabelled (moving the weights folder does not count as a change)."""
    if cfg.labeller == "oracle":
        o = cfg.oracle
        if o.naming == "canonical":
            return "oracle|v1"
        from pgov3d_core.labelling.synonyms import SYNONYMS, table_fingerprint

        return f"oracle|v1|synonyms|{o.seed}|{table_fingerprint(o.synonyms or SYNONYMS)}"
    w = cfg.weights
    names = [Path(p).name if p else "unset" for p in (w.llava, w.grounding_dino, w.sam)]
    settings = cfg.fingerprint(("vocabulary", "grounding", "segmentation"))
    return "|".join(["models", *names, cfg.segmentation.sam_model_type, settings])


# --------------------------------------------------------------------------- oracle


def oracle_entities(labels: np.ndarray, class_names: list[str], where: str = "frame",
                    name_of=None) -> EntityResult:
    """Ground-truth class ids (H, W), -1 = none → entities of the classes present in the frame,
    in class-id order: entity k is class present[k - 1], named class_names[present[k - 1]] or, with
    `name_of`, name_of(that class name)."""
    lab = np.asarray(labels, dtype=np.int64)
    present = np.unique(lab[lab >= 0])
    if len(present) and present[-1] >= len(class_names):
        raise LabellingError(
            f"{where}: label id {int(present[-1])} has no class name (the scene's meta.yaml lists "
            f"{len(class_names)} class_names)"
        )
    lut = np.zeros(int(present[-1]) + 2 if len(present) else 1, dtype=np.uint16)  # index id + 1
    lut[present + 1] = np.arange(1, len(present) + 1, dtype=np.uint16)
    entity = lut[np.maximum(lab, -1) + 1]
    names = [class_names[int(c)] if name_of is None else name_of(class_names[int(c)]) for c in present]
    return EntityResult(entity=entity, labels=names, scores=[1.0] * len(names), vocabulary=list(names))


class OracleLabeller:
    name = "oracle"

    def __init__(self, cfg: LabellingConfig | None = None):
        from pgov3d_core.labelling.synonyms import SYNONYMS, check_synonyms

        cfg = cfg or LabellingConfig(labeller="oracle")
        self.identity = labeller_identity(cfg)
        self.naming = cfg.oracle.naming
        self.seed = int(cfg.oracle.seed)
        self.synonyms = check_synonyms(cfg.oracle.synonyms or SYNONYMS)

    def cannot_label(self, frame: Frame) -> str | None:
        return "no ground-truth label image (label/<id>.png)" if frame.labels is None else None

    def label(self, frames: list[Frame], class_names: list[str], scene: str = "") -> list[EntityResult]:
        """Entities of the ground-truth classes; in `synonyms` naming each class present in a frame
        is written under one name drawn for (seed, scene, frame, class), as an MLLM would name it.
        Only the names change: the scene's label images and class_names (evaluation) stay canonical."""
        from pgov3d_core.labelling.synonyms import draw_name

        out = []
        for f in frames:
            if f.labels is None:
                raise LabellingError(f"frame {f.frame_id!r}: the oracle labeller needs a ground-truth label image")
            name_of = None
            if self.naming == "synonyms":
                name_of = lambda c, fid=f.frame_id: draw_name(self.synonyms, c, self.seed, scene, fid)  # noqa: E731
            out.append(oracle_entities(f.labels, class_names, f"frame {f.frame_id!r}", name_of))
        return out


# --------------------------------------------------------------------------- foundation models


class ModelLabeller:
    name = "models"

    def __init__(self, cfg: LabellingConfig):
        from pgov3d_core.device import resolve_device
        from pgov3d_core.labelling.models import (
            GroundingDinoDetector,
            LlavaVocabulary,
            SamSegmenter,
            resolve_dtype,
        )

        offline_environment()
        # Every path is checked before any model loads: a typo fails in a second, not after 15 GB.
        keys = ("llava", "grounding_dino", "sam")
        paths = {k: require_weights(getattr(cfg.weights, k), f"weights.{k}") for k in keys}
        self.cfg = cfg
        self.identity = labeller_identity(cfg)
        self.device = resolve_device(cfg.device)
        dtype = resolve_dtype(self.device, cfg.dtype)
        bs = cfg.batch_size
        self.vocabulary = LlavaVocabulary(paths["llava"], cfg.vocabulary, self.device, dtype, bs)
        self.detector = GroundingDinoDetector(paths["grounding_dino"], cfg.grounding, self.device, dtype, bs)
        self.segmenter = SamSegmenter(paths["sam"], cfg.segmentation, self.device, dtype)

    def cannot_label(self, frame: Frame) -> str | None:
        return None

    @torch.inference_mode()
    def label(self, frames: list[Frame], class_names: list[str], scene: str = "") -> list[EntityResult]:
        images = [np.asarray(f.color, dtype=np.uint8) for f in frames]
        answers = self.vocabulary.describe_and_list(images)
        detections = self.detector.detect(images, [a.categories for a in answers])
        results = []
        for frame, image, ans, det in zip(frames, images, answers, detections, strict=True):
            masks = self.segmenter.segment(image, det.boxes)
            entity, labels, scores, dropped = merge_masks(
                masks, det.scores, det.categories, ans.categories, self.cfg.segmentation.min_mask_pixels
            )
            log.debug("frame %s: %d categories, %d boxes, %d entities", frame.frame_id, len(ans.categories),
                      len(det), len(labels))
            results.append(EntityResult(entity, labels, scores, ans.categories, dropped, ans.description, ans.answer))
        return results


def build_labeller(cfg: LabellingConfig) -> Labeller:
    return OracleLabeller(cfg) if cfg.labeller == "oracle" else ModelLabeller(cfg)
