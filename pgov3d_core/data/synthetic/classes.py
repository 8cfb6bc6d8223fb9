"""The synthetic rooms' fixed class list: the same order for every scene, so ids compare across
scenes (per-pixel class ids are 0-based indices into `CLASS_NAMES`)."""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "wall",
    "floor",
    "ceiling",
    "chair",
    "table",
    "sofa",
    "bed",
    "cabinet",
    "bookshelf",
    "desk",
    "door",
    "window",
    "toilet",
    "sink",
    "bathtub",
    "picture",
    "refrigerator",
    "lamp",
)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
STRUCTURE_CLASSES = ("wall", "floor", "ceiling")
OBJECT_CLASSES: tuple[str, ...] = tuple(c for c in CLASS_NAMES if c not in STRUCTURE_CLASSES)
