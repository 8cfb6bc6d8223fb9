"""Settings of the pixel-wise entity labelling (config/labelling.yaml), checked when read.

Unknown keys are errors rather than silently ignored, because a misspelt threshold would
otherwise run a whole dataset with the default."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ConfigError is the config loader's own, importable from here too.
from pgov3d_core.config import ConfigError, apply_overrides, from_section, load_config, section
from pgov3d_core.weights import WeightsError

LABELLERS = ("models", "oracle")


@dataclass
class WeightsConfig:
    """Local weight paths; never downloaded (see pgov3d_core/labelling/__init__.py for what goes where)."""

    llava: str | None = None  # folder of a LLaVA-NeXT transformers checkpoint
    grounding_dino: str | None = None  # folder of a GroundingDINO transformers checkpoint
    sam: str | None = None  # SAM state-dict file (.pth)
    text_encoder: str | None = None  # open_clip checkpoint file


@dataclass
class VocabularyConfig:
    describe_prompt: str = (
        "Carefully observe this image and describe it in detail: the kind of place, the large surfaces "
        "(floor, walls, ceiling) and every object you can see, including small ones."
    )
    list_prompt: str = (
        "Based on the image and your description, list all distinct object categories visible in the "
        "image. Answer only with a comma-separated list of short category names (one or two words each)."
    )
    max_new_tokens_describe: int = 384
    max_new_tokens_list: int = 160
    max_categories: int = 40
    max_words: int = 4
    chat_template: str | None = None  # Jinja template when the checkpoint's processor has none

    def __post_init__(self) -> None:
        for name in ("max_new_tokens_describe", "max_new_tokens_list", "max_categories", "max_words"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass
class GroundingConfig:
    box_threshold: float = 0.30  # GroundingDINO box confidence (max token probability)
    text_threshold: float = 0.25  # the assigned category's token probability
    nms_iou: float = 0.7  # per-category non-maximum suppression (1.0 disables)
    max_boxes: int = 100  # per image, highest scores first

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold", "nms_iou"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if int(self.max_boxes) < 1:
            raise ValueError("max_boxes must be >= 1")


@dataclass
class SegmentationConfig:
    sam_model_type: str = "vit_h"  # vit_h | vit_l | vit_b | tiny (tests, CPU demo)
    sam_architecture: dict | None = None  # overrides of the architecture of sam_model_type
    box_batch: int = 32  # boxes per SAM decoder call
    min_mask_pixels: int = 1  # categories owning fewer pixels after merging are dropped

    def __post_init__(self) -> None:
        if int(self.box_batch) < 1:
            raise ValueError("box_batch must be >= 1")


NAMINGS = ("canonical", "synonyms")


@dataclass
class OracleConfig:
    """How the oracle labeller names the ground-truth classes in the entity cache."""

    naming: str = "canonical"  # canonical: the class name | synonyms: MLLM-style, a seeded synonym per frame
    seed: int = 0  # synonyms: which name each frame and class gets
    synonyms: dict | None = None  # synonyms: {class: [names]}; null = labelling.synonyms.SYNONYMS

    def __post_init__(self) -> None:
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {NAMINGS}, got {self.naming!r}")
        if self.synonyms is not None:
            from pgov3d_core.labelling.synonyms import check_synonyms

            check_synonyms(self.synonyms)


@dataclass
class TextEncoderSection:
    """Defaults for the CLIP text encoder of the consumers (weights.text_encoder is its checkpoint)."""

    model: str = "ViT-B-32"
    template: str = "a {} in a scene"
    random_init: bool = False
    cache_path: str | None = None


@dataclass
class LabellingConfig:
    labeller: str = "models"
    stride: int = 1
    batch_size: int = 2  # frames per LLaVA-NeXT / GroundingDINO batch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (float16 on CUDA, float32 on CPU) | float16 | bfloat16 | float32
    overlay: bool = False
    weights: WeightsConfig = section(WeightsConfig)
    vocabulary: VocabularyConfig = section(VocabularyConfig)
    grounding: GroundingConfig = section(GroundingConfig)
    segmentation: SegmentationConfig = section(SegmentationConfig)
    text_encoder: TextEncoderSection = section(TextEncoderSection)
    oracle: OracleConfig = section(OracleConfig)

    def __post_init__(self) -> None:
        if self.labeller not in LABELLERS:
            raise ValueError(f"labeller must be one of {LABELLERS}, got {self.labeller!r}")
        if int(self.stride) < 1 or int(self.batch_size) < 1:
            raise ValueError("stride and batch_size must be >= 1")
        if self.dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise ValueError(f"dtype must be auto, float16, bfloat16 or float32, got {self.dtype!r}")

    @classmethod
    def from_dict(cls, data: dict | None) -> LabellingConfig:
        return from_section(cls, data, "")

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> LabellingConfig:
        """Read a YAML config with the project's loader (`_base_`, `1e-3` as a float; None: all
        defaults). Relative weight paths are taken relative to the config file's folder, so a
        config can sit next to its weights."""
        if path is None:
            return cls()
        p = Path(path)
        data = load_config(p)
        try:
            cfg = cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        for name in ("llava", "grounding_dino", "sam", "text_encoder"):
            value = getattr(cfg.weights, name)
            if value and not Path(value).expanduser().is_absolute():
                setattr(cfg.weights, name, str((p.parent / value).resolve()))
        return cfg

    def with_overrides(self, **kw: Any) -> LabellingConfig:
        """A copy with top-level fields replaced (None values are ignored), checked like the file."""
        try:
            return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def merged(self, overrides: Mapping | Iterable[str] | None) -> LabellingConfig:
        """A copy with overrides merged key by key over this one (the curriculum's
        `labelling.overrides: {oracle: {naming: synonyms}}`, or dotted keys as on the command line:
        `{"oracle.naming": "synonyms"}` or `["oracle.naming=synonyms"]`), checked like the file."""
        return self if not overrides else LabellingConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self, sections: tuple[str, ...]) -> str:
        """Short hash of the named sections: part of the labeller identity in the cache, so a
        changed prompt or threshold relabels the frames instead of mixing two settings."""
        data = {s: dataclasses.asdict(getattr(self, s)) for s in sections}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def text_encoder_config(self) -> dict:
        """Settings for `TextEncoder` with `weights.text_encoder` as its checkpoint."""
        t = self.text_encoder
        if not t.random_init and not self.weights.text_encoder:
            raise WeightsError(
                "weights.text_encoder is not set: put the local path of the open_clip checkpoint in your "
                "config under weights.text_encoder (or set text_encoder.random_init: true for a "
                "mechanical, not open-world, run)"
            )
        return {
            "backend": "open_clip",
            "model": t.model,
            "checkpoint": self.weights.text_encoder,
            "random_init": t.random_init,
            "template": t.template,
            "cache_path": t.cache_path,
            "device": self.device,
        }
