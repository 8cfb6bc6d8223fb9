"""Pixel-wise entities of one frame: the in-memory result, mask merging, and the on-disk cache.

On disk, per frame of a scene folder::

    <scene>/entities/<frame_id>.png    uint16 (H, W) at the frame's (depth) resolution:
                                       0 = no entity, k = labels[k - 1]
    <scene>/entities/<frame_id>.json   {"format", "version", "frame_id", "image_size": [W, H],
                                        "labels", "scores", "pixel_counts", "vocabulary",
                                        "dropped", "mllm": {"description", "answer"},
                                        "labeller": {"name", "identity"}}

Both files are written atomically (temp file + os.replace), the PNG first and the JSON last, so
an existing, valid JSON marks a completed frame: a crash between the two leaves no JSON (or the
previous, still consistent pair) and the frame is redone on the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from pgov3d_core.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

ENTITY_DIR = "entities"
OVERLAY_DIR = "overlay"
FORMAT_NAME = "pgov3d-entities"
FORMAT_VERSION = 1
MAX_ENTITIES = 65535  # uint16 ids
OUTDATED = "were labelled by"  # start of check_entities' reason for a labeller/settings change


class EntityError(ValueError):
    """A cached entity file that is missing, corrupt or inconsistent (the message names it)."""


@dataclass
class EntityResult:
    """Pixel-wise entities of one image.

    entity: (H, W) uint16, 0 = none, k = labels[k - 1].
    labels: grounded categories C_i (each owns at least one pixel).
    scores: per label, the best detection score among its pixel-owning detections (1.0 for oracle).
    vocabulary: the full parsed MLLM list C_i' (or the oracle's present classes).
    dropped: category → why it is not in `labels` ("no box", "no pixels").
    description, answer: raw MLLM texts of the two chain-of-thought turns ("" for oracle).
    """

    entity: np.ndarray
    labels: list[str]
    scores: list[float]
    vocabulary: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    description: str = ""
    answer: str = ""

    def __post_init__(self) -> None:
        self.entity = np.asarray(self.entity)
        if self.entity.ndim != 2 or self.entity.dtype != np.uint16:
            raise ValueError(f"entity image must be (H, W) uint16, got {self.entity.dtype} {self.entity.shape}")
        if len(self.labels) != len(self.scores):
            raise ValueError(f"{len(self.labels)} labels but {len(self.scores)} scores")
        if len(self.labels) > MAX_ENTITIES:
            raise ValueError(f"{len(self.labels)} labels do not fit a uint16 entity image")
        if self.entity.size and int(self.entity.max()) > len(self.labels):
            raise ValueError(f"entity id {int(self.entity.max())} > number of labels {len(self.labels)}")

    @property
    def pixel_counts(self) -> list[int]:
        counts = np.bincount(self.entity.ravel(), minlength=len(self.labels) + 1)
        return [int(c) for c in counts[1:]]


def merge_masks(
    masks: np.ndarray,
    scores: np.ndarray,
    categories: np.ndarray,
    vocabulary: list[str],
    min_pixels: int = 1,
) -> tuple[np.ndarray, list[str], list[float], dict[str, str]]:
    """Per-pixel entity image from overlapping detection masks.

    masks (N, H, W) bool, scores (N,), categories (N,) indices into `vocabulary`. Each pixel goes
    to the covering detection with the highest score (ties: the earlier detection), because a
    confident detection is a better guess for a contested pixel than a weak one and the result
    does not depend on the order SAM returned the masks in. Categories that own fewer than
    `min_pixels` pixels are dropped ("no pixels"); categories without any detection are dropped
    ("no box"). Entity ids are assigned in vocabulary order, so the table reads like the list.

    Returns (entity uint16 (H, W), labels, scores, dropped)."""
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    categories = np.asarray(categories, dtype=np.int64).reshape(-1)
    if masks.ndim != 3 or not (len(masks) == len(scores) == len(categories)):
        raise ValueError(
            f"masks (N, H, W), scores (N,), categories (N,) must agree: {masks.shape}, {scores.shape}, "
            f"{categories.shape}"
        )
    if len(categories) and (categories.min() < 0 or categories.max() >= len(vocabulary)):
        raise ValueError(f"category index out of range for a vocabulary of {len(vocabulary)}")
    h, w = masks.shape[1:]
    owner = np.full((h, w), -1, dtype=np.int64)
    best = np.full((h, w), -np.inf)
    for i in range(len(masks)):
        take = masks[i] & (scores[i] > best)
        owner[take] = i
        best[take] = scores[i]
    dropped: dict[str, str] = {}
    has_box = set(categories.tolist())
    owned = np.bincount(owner[owner >= 0], minlength=len(masks)) if len(masks) else np.zeros(0, np.int64)
    cat_of_pixel = np.where(owner >= 0, categories[np.maximum(owner, 0)] if len(masks) else -1, -1)
    cat_pixels = np.bincount(cat_of_pixel[cat_of_pixel >= 0], minlength=len(vocabulary))
    new_id = np.zeros(len(vocabulary) + 1, dtype=np.int64)  # index c + 1 → entity id (0 = none)
    labels: list[str] = []
    out_scores: list[float] = []
    for c, name in enumerate(vocabulary):
        if c not in has_box:
            dropped[name] = "no box"
        elif cat_pixels[c] < max(min_pixels, 1):
            dropped[name] = "no pixels"
        else:
            labels.append(name)
            out_scores.append(float(scores[(categories == c) & (owned > 0)].max()))
            new_id[c + 1] = len(labels)
    entity = new_id[cat_of_pixel + 1].astype(np.uint16)
    return entity, labels, out_scores, dropped


# --------------------------------------------------------------------------- cache files


def entity_paths(scene_root: str | os.PathLike, frame_id: str) -> tuple[Path, Path]:
    d = Path(scene_root) / ENTITY_DIR
    return d / f"{frame_id}.png", d / f"{frame_id}.json"


def overlay_path(scene_root: str | os.PathLike, frame_id: str) -> Path:
    return Path(scene_root) / ENTITY_DIR / OVERLAY_DIR / f"{frame_id}.png"


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_entities(
    scene_root: str | os.PathLike, frame_id: str, result: EntityResult, labeller: dict
) -> tuple[Path, Path]:
    """Write the frame's entity PNG, then its JSON (the completion mark); both atomic."""
    png_path, json_path = entity_paths(scene_root, frame_id)
    h, w = result.entity.shape
    record = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "frame_id": frame_id,
        "image_size": [int(w), int(h)],
        "labels": list(result.labels),
        "scores": [round(float(s), 6) for s in result.scores],
        "pixel_counts": result.pixel_counts,
        "vocabulary": list(result.vocabulary),
        "dropped": dict(result.dropped),
        "mllm": {"description": result.description, "answer": result.answer},
        "labeller": dict(labeller),
    }
    atomic_write_bytes(png_path, _png_bytes(result.entity))
    atomic_write_bytes(json_path, (json.dumps(record, indent=1, ensure_ascii=False) + "\n").encode())
    return png_path, json_path


def read_entity_record(scene_root: str | os.PathLike, frame_id: str) -> dict:
    """The frame's JSON record, checked for structure; EntityError naming the file otherwise."""
    _, json_path = entity_paths(scene_root, frame_id)
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EntityError(f"{json_path}: file not found (frame not labelled yet)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EntityError(f"{json_path}: corrupt entity table ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise EntityError(f"{json_path}: not a {FORMAT_NAME} file")
    if record.get("version") != FORMAT_VERSION:
        raise EntityError(f"{json_path}: format version {record.get('version')!r}, expected {FORMAT_VERSION}")
    labels, scores, size = record.get("labels"), record.get("scores"), record.get("image_size")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise EntityError(f"{json_path}: 'labels' must be a list of strings")
    if not isinstance(scores, list) or len(scores) != len(labels) or not all(
        isinstance(x, int | float) for x in scores
    ):
        raise EntityError(f"{json_path}: 'scores' must be a list of numbers, one per label")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size)):
        raise EntityError(f"{json_path}: 'image_size' must be [width, height]")
    if not isinstance(record.get("labeller"), dict):
        raise EntityError(f"{json_path}: 'labeller' must be a mapping")
    return record


def _read_entity_png(png_path: Path, size: tuple[int, int], n_labels: int) -> np.ndarray:
    try:
        with Image.open(png_path) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                raise EntityError(f"{png_path}: entity image must be a 16-bit single-channel PNG, got mode {im.mode}")
            arr = np.asarray(im).astype(np.int32)
    except FileNotFoundError:
        raise EntityError(f"{png_path}: file not found") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        if isinstance(exc, EntityError):
            raise
        raise EntityError(f"{png_path}: corrupt entity image ({exc})") from None
    if (arr.shape[1], arr.shape[0]) != tuple(size):
        raise EntityError(f"{png_path}: size {arr.shape[1]}x{arr.shape[0]}, expected {size[0]}x{size[1]}")
    if arr.size and int(arr.max()) > n_labels:
        raise EntityError(f"{png_path}: entity id {int(arr.max())} but the table has only {n_labels} labels")
    return arr


def read_entities(scene_root: str | os.PathLike, frame_id: str) -> tuple[np.ndarray, list[str]]:
    """The frame's pixel-wise entities for consumers (Stage 1).

    Returns (entity image int32 (H, W) with -1 = none and k = labels[k], labels). Raises
    EntityError naming the file when either file is missing, corrupt or inconsistent."""
    record = read_entity_record(scene_root, frame_id)
    png_path, _ = entity_paths(scene_root, frame_id)
    arr = _read_entity_png(png_path, tuple(record["image_size"]), len(record["labels"]))
    return arr - 1, list(record["labels"])


def check_entities(
    scene_root: str | os.PathLike, frame_id: str, size: tuple[int, int] | None, identity: str | None
) -> str | None:
    """None when the cached frame is complete and current, else the reason to redo it."""
    png_path, json_path = entity_paths(scene_root, frame_id)
    if not json_path.exists() and not png_path.exists():
        return "missing"
    try:
        record = read_entity_record(scene_root, frame_id)
        if size is not None and tuple(record["image_size"]) != tuple(size):
            return f"{json_path}: image size {record['image_size']} does not match the frame's {list(size)}"
        _read_entity_png(png_path, tuple(record["image_size"]), len(record["labels"]))
    except EntityError as exc:
        return str(exc)
    cached = record["labeller"].get("identity")
    if identity is not None and cached != identity:
        return f"{OUTDATED} {cached!r}, now {identity!r}"
    return None


# --------------------------------------------------------------------------- overlay


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, saturated colour per label text (same colour in every frame and run)."""
    h = hashlib.sha1(label.encode()).digest()
    hue, sat, val = h[0] / 255.0, 0.65 + 0.35 * h[1] / 255.0, 0.75 + 0.25 * h[2] / 255.0
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(color: np.ndarray, entity: np.ndarray, labels: list[str], alpha: float = 0.5) -> Image.Image:
    """The colour image with each entity tinted in its label colour and named at a pixel inside it."""
    rgb = np.asarray(color, dtype=np.float32)
    ent = np.asarray(entity)
    if rgb.shape[:2] != ent.shape:
        resized = Image.fromarray(np.asarray(color, np.uint8)).resize(ent.shape[::-1], Image.BILINEAR)
        rgb = np.asarray(resized, dtype=np.float32)
    palette = np.array([(0, 0, 0)] + [label_color(lab) for lab in labels], dtype=np.float32)
    tint = palette[ent.astype(np.int64)]
    on = (ent > 0)[:, :, None]
    out = np.where(on, (1 - alpha) * rgb + alpha * tint, rgb)
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for k, lab in enumerate(labels, start=1):
        ys, xs = np.nonzero(ent == k)
        if len(xs) == 0:
            continue
        # The mask pixel nearest the centroid: inside the mask even for non-convex shapes.
        j = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
        x, y = int(xs[j]), int(ys[j])
        left, top, right, bottom = draw.textbbox((x, y), lab)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text((x, y), lab, fill=label_color(lab))
    return image


def write_overlay(scene_root: str | os.PathLike, frame_id: str, color: np.ndarray) -> Path:
    """Render the cached entities of a frame over its colour image (atomic PNG write)."""
    entity, labels = read_entities(scene_root, frame_id)
    path = overlay_path(scene_root, frame_id)
    image = render_overlay(color, entity + 1, labels)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
