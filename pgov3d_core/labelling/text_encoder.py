"""CLIP text encoder (open_clip) with a persistent embedding cache.

Embeddings are L2-normalised, computed for `template.format(text)`, and cached in memory and in an
optional safetensors file keyed by (model identity, template, text), so each label is embedded once
across training runs and node restarts.

`random_init: true` builds the architecture with seeded random weights: the pipeline then runs
end to end (tests, CPU demo) and gives distinct, deterministic embeddings per text in every
process, but they carry no language meaning, so queries are not open-world. A random text
transformer maps every text to nearly the same direction (a shared prompt template dominates it;
mean cosine between class names ≈ 0.9), so in this mode the template is not applied and each
embedding is centred on the empty text's embedding before normalisation (mean cosine ≈ 0.3 at 64
dimensions): class targets stay distinguishable for training and queries.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pgov3d_core.weights import WeightsError, offline_environment, require_weights

log = logging.getLogger(__name__)


@dataclass
class TextEncoderConfig:
    model: str = "ViT-B-32"  # open_clip architecture name
    checkpoint: str | None = None  # local open_clip checkpoint (config key weights.text_encoder)
    random_init: bool = False
    seed: int = 0  # for random_init
    template: str = "a {} in a scene"
    model_cfg: dict | None = None  # custom architecture (embed_dim, vision_cfg, text_cfg): tiny test models
    cache_path: str | None = None
    device: str = "auto"
    batch_size: int = 256
    config_key: str = "weights.text_encoder"  # how the checkpoint path is named in error messages
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> TextEncoderConfig:
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known, extra=d)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TextEncoder:
    def __init__(self, cfg: TextEncoderConfig | dict | None = None):
        offline_environment()
        import open_clip

        self.cfg = cfg if isinstance(cfg, TextEncoderConfig) else TextEncoderConfig.from_dict(cfg)
        c = self.cfg
        self.device = resolve_device(c.device)
        if c.random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                if c.model_cfg is not None:
                    model = open_clip.model.CLIP(**c.model_cfg)
                else:
                    model = open_clip.create_model(c.model, pretrained=None)
            identity = f"{c.model if c.model_cfg is None else repr(sorted(c.model_cfg.items()))}|random|{c.seed}"
        else:
            path = require_weights(c.checkpoint, c.config_key)
            try:
                if c.model_cfg is not None:
                    model = open_clip.model.CLIP(**c.model_cfg)
                    state = torch.load(path, map_location="cpu", weights_only=True)
                    model.load_state_dict(state.get("state_dict", state))
                else:
                    model = open_clip.create_model(c.model, pretrained=str(path), weights_only=True)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                raise WeightsError(
                    f"{c.config_key}: {path} is not a usable {c.model} checkpoint ({exc})"
                ) from None
            stat = path.stat()
            identity = f"{c.model}|{path.name}|{stat.st_size}"
        self.model = model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(c.model) if c.model_cfg is None else open_clip.tokenizer.tokenize
        self.template = "{}" if c.random_init else c.template
        self.identity = f"{identity}|{self.template}"
        self._centre = None
        if c.random_init:
            with torch.no_grad():
                self._centre = self.model.encode_text(self.tokenizer([""]).to(self.device)).float()
        self._cache: dict[str, torch.Tensor] = {}
        self._dirty = False
        if c.cache_path and Path(c.cache_path).exists():
            self._load_cache(Path(c.cache_path))

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else int(
            self.encode(["object"]).shape[1]
        )

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.identity}\x00{text}".encode()).hexdigest()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, D) float32 L2-normalised embeddings of `texts` (CPU tensor)."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not a string")
        missing = [t for t in dict.fromkeys(texts) if self._key(t) not in self._cache]
        for start in range(0, len(missing), self.cfg.batch_size):
            batch = missing[start : start + self.cfg.batch_size]
            tokens = self.tokenizer([self.template.format(t) for t in batch]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                emb = self.model.encode_text(tokens).float()
            if self._centre is not None:
                emb = emb - self._centre
            emb = torch.nn.functional.normalize(emb, dim=1).cpu()
            for t, e in zip(batch, emb, strict=True):
                self._cache[self._key(t)] = e
            self._dirty = True
        if self._dirty and self.cfg.cache_path:
            self._save_cache(Path(self.cfg.cache_path))
        if not texts:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[self._key(t)] for t in texts])

    def _load_cache(self, path: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            self._cache.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            log.warning("ignoring unreadable text-embedding cache %s (%s); it will be rebuilt", path, exc)

    def _save_cache(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in self._cache.items()}, str(tmp))
        os.replace(tmp, path)
        self._dirty = False


def tiny_clip_config(embed_dim: int = 64) -> dict:
    """A small CLIP architecture (random weights) for tests and the CPU demo."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"layers": 1, "width": 64, "head_width": 32, "patch_size": 16, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
