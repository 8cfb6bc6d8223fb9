"""Benchmark label sets as typed data: ScanNet20, its 19-class open-vocabulary variant, ScanNet200, S3DIS.

A label set maps the ids stored in a dataset's annotation files to contiguous class indices
0..C-1 (the canonical convention of `pgov3d_core.data`: -1 = unlabelled / not in the set).
Each set says which id space its `ids` live in, because the datasets use three different ones:

* ``"nyu40"``: NYU Depth v2's 40 classes (1..40; 0 = unannotated). ScanNet's
  ``<scene>_vh_clean_2.labels.ply`` vertex ``label`` and label images exported through the
  ``nyu40id`` column of ``scannetv2-labels.combined.tsv`` use these. ScanNet20/19 are subsets.
* ``"scannet"``: ScanNet's raw category ids (the ``id`` column of ``scannetv2-labels.combined.tsv``,
  1..1191). ScanNet200 is a subset; NYU40 ids cannot be turned into ScanNet200 classes.
* ``"s3dis"``: S3DIS class indices 0..12 (the set is the identity on its own ids).

Sources: ScanNet20 and ScanNet200 ids/names are the official benchmark constants
(ScanNet/ScanNet, ``BenchmarkScripts/ScanNet200/scannet200_constants.py``); the S3DIS classes are
the 13 of the S3DIS semantic-segmentation benchmark (Armeni et al. 2016) in their customary order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------- ScanNet20 (NYU40 ids)

VALID_CLASS_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
"""NYU40 ids of the 20 ScanNet v2 benchmark classes, in benchmark order (index i ↔ CLASS_LABELS_20[i])."""

CLASS_LABELS_20: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)

# The 19-class variant used by open-vocabulary 3D segmentation papers (base/novel splits):
# ScanNet20 without the catch-all "otherfurniture" (NYU40 id 39), which has no meaningful text prompt.
VALID_CLASS_IDS_19: tuple[int, ...] = tuple(i for i in VALID_CLASS_IDS if i != 39)
CLASS_LABELS_19: tuple[str, ...] = tuple(n for n in CLASS_LABELS_20 if n != "otherfurniture")

# --------------------------------------------------------------------------- ScanNet200 (raw ScanNet ids)

# fmt: off
VALID_CLASS_IDS_200: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, 31, 32, 33,
    34, 35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 59, 62, 63, 64, 65,
    66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86, 87, 88, 89, 90, 93, 95, 96, 97, 98,
    99, 100, 101, 102, 103, 104, 105, 106, 107, 110, 112, 115, 116, 118, 120, 121, 122, 125, 128, 130, 131,
    132, 134, 136, 138, 139, 140, 141, 145, 148, 154, 155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170,
    177, 180, 185, 188, 191, 193, 195, 202, 208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276,
    283, 286, 300, 304, 312, 323, 325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540, 562, 570, 572,
    581, 609, 748, 776, 1156, 1163, 1164, 1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175,
    1176, 1178, 1179, 1180, 1181, 1182, 1183, 1184, 1185, 1186, 1187, 1188, 1189, 1190, 1191,
)

CLASS_LABELS_200: tuple[str, ...] = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed",
    "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair",
    "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv", "nightstand",
    "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub", "end table", "dining table",
    "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand", "whiteboard", "blanket",
    "shower curtain", "trash can", "closet", "stairs", "microwave", "stove", "shoe", "computer tower", "bottle",
    "bin", "ottoman", "bench", "board", "washing machine", "mirror", "copier", "basket", "sofa chair",
    "file cabinet", "fan", "laptop", "shower", "paper", "person", "paper towel dispenser", "oven", "blinds",
    "rack", "plate", "blackboard", "piano", "suitcase", "rail", "radiator", "recycling bin", "container",
    "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand", "light", "laundry basket", "pipe",
    "clothes dryer", "guitar", "toilet paper holder", "seat", "speaker", "column", "bicycle", "ladder",
    "bathroom stall", "shower wall", "cup", "jacket", "storage bin", "coffee maker", "dishwasher",
    "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster", "bulletin board", "ironing board",
    "fireplace", "soap dish", "kitchen counter", "doorframe", "toilet paper dispenser", "mini fridge",
    "fire extinguisher", "ball", "hat", "shower curtain rod", "water cooler", "paper cutter", "tray",
    "shower door", "pillar", "ledge", "toaster oven", "mouse", "toilet seat cover dispenser", "furniture",
    "cart", "storage container", "scale", "tissue box", "light switch", "crate", "power outlet", "decoration",
    "sign", "projector", "closet door", "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones",
    "dish rack", "broom", "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar",
    "purse", "vent", "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock",
    "music stand", "projector screen", "divider", "laundry detergent", "bathroom counter", "object",
    "bathroom vanity", "closet wall", "laundry hamper", "bathroom stall door", "ceiling light", "trash bin",
    "dumbbell", "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure",
    "shower head", "keyboard piano", "case of water bottles", "coat rack", "storage organizer", "folded chair",
    "fire alarm", "power strip", "calendar", "poster", "potted plant", "luggage", "mattress",
)
# fmt: on

# --------------------------------------------------------------------------- S3DIS

S3DIS_CLASSES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
    "board", "clutter",
)
"""The 13 S3DIS benchmark classes; index i is the class id stored in converted S3DIS clouds."""

S3DIS_ALIASES: dict[str, str] = {"stairs": "clutter"}
"""Annotation-file class names folded into a benchmark class (customary since PointNet: the few
`stairs_*.txt` objects of Area 2 count as clutter)."""


# --------------------------------------------------------------------------- LabelSet


@dataclass(frozen=True)
class LabelSet:
    """A benchmark's classes: `class_names[i]` is class index i, stored in files as id `ids[i]`.

    `id_space` names what the ids mean (``"nyu40"``, ``"scannet"`` or ``"s3dis"``, see the module
    docstring); mapping ids from a different space is refused rather than silently wrong."""

    name: str
    class_names: tuple[str, ...]
    ids: tuple[int, ...]
    id_space: str = "nyu40"
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.ids):
            raise ValueError(f"label set {self.name!r}: {len(self.class_names)} names but {len(self.ids)} ids")
        if len(set(self.ids)) != len(self.ids) or min(self.ids, default=0) < 0:
            raise ValueError(f"label set {self.name!r}: ids must be distinct and non-negative")
        lut = np.full(max(self.ids, default=0) + 1, -1, dtype=np.int32)
        lut[list(self.ids)] = np.arange(len(self.ids), dtype=np.int32)
        object.__setattr__(self, "_lut", lut)

    def __len__(self) -> int:
        return len(self.class_names)

    def map_ids(self, ids: np.ndarray | int, id_space: str | None = None) -> np.ndarray:
        """Dataset ids (any integer array) → class indices 0..C-1 (int32); ids outside the set → -1.

        `id_space`, when given, must equal the set's own (e.g. NYU40 ids cannot be mapped to
        ScanNet200, whose ids are raw ScanNet category ids): ValueError otherwise."""
        if id_space is not None and id_space != self.id_space:
            raise ValueError(
                f"label set {self.name!r} is defined on {self.id_space!r} ids; cannot map {id_space!r} ids to it"
            )
        a = np.asarray(ids)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                raise ValueError(f"label set {self.name!r}: ids must be integers")
        a = a.astype(np.int64)
        inside = (a >= 0) & (a < len(self._lut))
        out = np.full(a.shape, -1, dtype=np.int32)
        out[inside] = self._lut[a[inside]]
        return out

    def index_of(self, class_name: str) -> int:
        """Class index of a name (ValueError if absent)."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise ValueError(f"label set {self.name!r} has no class {class_name!r}") from None


SCANNET20 = LabelSet("scannet20", CLASS_LABELS_20, VALID_CLASS_IDS, "nyu40")
SCANNET19 = LabelSet("scannet19", CLASS_LABELS_19, VALID_CLASS_IDS_19, "nyu40")
SCANNET200 = LabelSet("scannet200", CLASS_LABELS_200, VALID_CLASS_IDS_200, "scannet")
S3DIS = LabelSet("s3dis", S3DIS_CLASSES, tuple(range(len(S3DIS_CLASSES))), "s3dis")

_LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (SCANNET20, SCANNET19, SCANNET200, S3DIS)}


def get_label_set(name: str | LabelSet) -> LabelSet:
    """The label set called `name` ("scannet20", "scannet19", "scannet200", "s3dis"; case-insensitive).
    A LabelSet passes through unchanged."""
    if isinstance(name, LabelSet):
        return name
    try:
        return _LABEL_SETS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {', '.join(_LABEL_SETS)}") from None


def nyu40_to_scannet20(ids: np.ndarray | int) -> np.ndarray:
    """NYU40 ids → ScanNet20 indices 0..19 (int32); ids not among the 20 benchmark classes → -1."""
    return SCANNET20.map_ids(ids)


def nyu40_to_scannet19(ids: np.ndarray | int) -> np.ndarray:
    """NYU40 ids → indices 0..18 of the 19-class variant (no "otherfurniture"); others → -1."""
    return SCANNET19.map_ids(ids)
