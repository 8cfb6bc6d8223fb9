"""Text encoder with a persistent embedding cache, behind one interface for two backends:

* `backend: sentence` — a sentence-embedding model (`pgov3d_core.labelling.sentence_model`): the
  bundled all-MiniLM-L6-v2 (384-d; `checkpoint: null`, the default of every CPU config) or any
  local sentence-transformers folder (`checkpoint: /path/to/folder`). Real language meaning with no
  download: "couch" lands next to "sofa", so queries work for names the network never saw.
* `backend: open_clip` — CLIP's text tower from a local open_clip checkpoint (ViT-B/32 512-d,
  ViT-L/14 768-d): the text space the image side of the paper (CLIP-aligned entities) expects.

Embeddings are L2-normalised, computed for `template.format(text)` (default per backend: "a {} in
a scene" for CLIP, which was trained on captions; "{}" for sentence models, where a shared template
pulls all class names together — mean cosine between the 18 synthetic class names 0.36 without it,
0.57 with "a {} in a room"), and cached in memory and in an optional safetensors file keyed by
(model identity, template, text), so each label is embedded once across training runs and node
restarts. The identity is recorded in every checkpoint; stage 2, evaluation and the node compare it.

`random_init: true` (open_clip only; an explicit mode for unit tests) builds the architecture with
seeded random weights: distinct, deterministic embeddings per text in every process with no
language meaning. A random text transformer maps every text to nearly the same direction (a shared
prompt template dominates it; mean cosine between class names ≈ 0.9), so in this mode the template
is not applied and each embedding is centred on the empty text's embedding before normalisation
(mean cosine ≈ 0.3 at 64 dimensions): class targets stay distinguishable for training and queries.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pgov3d_core.config import from_section
from pgov3d_core.device import resolve_device  # also imported from here by older callers
from pgov3d_core.fileio import atomic_write_bytes
from pgov3d_core.weights import WeightsError, offline_environment, require_weights

log = logging.getLogger(__name__)


BACKENDS = ("open_clip", "sentence")
DEFAULT_TEMPLATES = {"open_clip": "a {} in a scene", "sentence": "{}"}


@dataclass
class TextEncoderConfig:
    # open_clip is the default so that configs and checkpoints written before the sentence backend
    # existed (which have no `backend` key) keep meaning what they meant.
    backend: str = "open_clip"  # open_clip | sentence
    model: str = "ViT-B-32"  # open_clip architecture name (open_clip only)
    # open_clip: a local checkpoint file; sentence: a local sentence-transformers folder, or null for
    # the bundled all-MiniLM-L6-v2.
    checkpoint: str | None = None
    checksums: dict | None = None  # sentence folders: {relative file: sha256} verified before loading
    random_init: bool = False  # open_clip only (unit tests)
    seed: int = 0  # for random_init
    template: str | None = None  # None: the backend's default (DEFAULT_TEMPLATES)
    model_cfg: dict | None = None  # custom architecture (embed_dim, vision_cfg, text_cfg): tiny test models
    cache_path: str | None = None
    device: str = "auto"
    batch_size: int = 256
    config_key: str = "weights.text_encoder"  # how the checkpoint path is named in error messages

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "sentence" and (self.random_init or self.model_cfg is not None):
            raise ValueError("random_init / model_cfg are open_clip options (random-weight test "
                             "models); the sentence backend always loads real weights")

    @classmethod
    def from_dict(cls, d: dict | None) -> TextEncoderConfig:
        return from_section(cls, d, "text_encoder")


class TextEncoder:
    def __init__(self, cfg: TextEncoderConfig | dict | None = None):
        offline_environment()
        self.cfg = cfg if isinstance(cfg, TextEncoderConfig) else TextEncoderConfig.from_dict(cfg)
        c = self.cfg
        self.device = resolve_device(c.device)
        self._centre = None
        if c.backend == "sentence":
            from pgov3d_core.labelling.sentence_model import SentenceModel

            model = SentenceModel(c.checkpoint, c.config_key, c.checksums)
            # By content, not by folder name: a copied or renamed folder is the same embedding space.
            identity = f"sentence|sha256:{model.weights_sha256[:16]}|{model.pooling}|{model.max_length}"
            self._dim = model.dim
            self.template = c.template if c.template is not None else DEFAULT_TEMPLATES["sentence"]
            self.model = model.to(self.device).eval()
            self._embed = self.model
        else:
            model, identity = self._open_clip(c)
            self._dim = int(model.text_projection.shape[1])
            self.model = model.to(self.device).eval()
            import open_clip

            tokenizer = open_clip.get_tokenizer(c.model) if c.model_cfg is None else open_clip.tokenizer.tokenize
            self._embed = lambda texts: self.model.encode_text(tokenizer(texts).to(self.device))
            if c.random_init:
                self.template = "{}"
                with torch.no_grad():
                    self._centre = self._embed([""]).float()
            else:
                self.template = c.template if c.template is not None else DEFAULT_TEMPLATES["open_clip"]
        self.identity = f"{identity}|{self.template}"
        self._cache: dict[str, torch.Tensor] = {}
        self._dirty = False
        if c.cache_path and Path(c.cache_path).exists():
            self._load_cache(Path(c.cache_path))

    @staticmethod
    def _open_clip(c: TextEncoderConfig):
        import open_clip

        if c.random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                if c.model_cfg is not None:
                    model = open_clip.model.CLIP(**c.model_cfg)
                else:
                    model = open_clip.create_model(c.model, pretrained=None)
            return model, f"{c.model if c.model_cfg is None else repr(sorted(c.model_cfg.items()))}|random|{c.seed}"
        path = require_weights(c.checkpoint, c.config_key)
        try:
            if c.model_cfg is not None:
                model = open_clip.model.CLIP(**c.model_cfg)
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state.get("state_dict", state))
            else:
                model = open_clip.create_model(c.model, pretrained=str(path), weights_only=True)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{c.config_key}: {path} is not a usable {c.model} checkpoint ({exc})") from None
        return model, f"{c.model}|{path.name}|{path.stat().st_size}"

    @property
    def backend(self) -> str:
        return self.cfg.backend

    @property
    def dim(self) -> int:
        return self._dim

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
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                emb = self._embed([self.template.format(t) for t in batch]).float()
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
        from safetensors.torch import save

        atomic_write_bytes(path, save({k: v.contiguous() for k, v in self._cache.items()}))
        self._dirty = False


def tiny_clip_config(embed_dim: int = 64) -> dict:
    """A small CLIP architecture (random weights) for tests and the CPU demo."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"layers": 1, "width": 64, "head_width": 32, "patch_size": 16, "image_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
