"""MLLM-style naming for the oracle labeller: the same object called differently from frame to frame.

LLaVA-NeXT does not name a class with one fixed word: one frame says "sofa", the next "couch";
"bookshelf" and "bookcase"; "picture", "painting", "poster". The oracle labeller's `synonyms`
naming mode reproduces that on ground-truth labels: for every frame and every class present in it,
one name is drawn from the class's synonym list, with a draw that depends only on (seed, scene,
frame id, class) — the same frame gets the same names in every run, in any labelling order or batch
size, and changing the seed renames everything.

`SYNONYMS` covers the synthetic rooms' 18 classes (`pgov3d_core.data.synthetic.CLASS_NAMES`); a
class without an entry keeps its canonical name. Each list starts with the canonical name. Names
are written as the labelling parser normalises them (lower case, singular), so stage 1 and stage 2
read the same text, and no name belongs to two classes.

Names of the same classes that appear in no list — what the network never saw as a training label —
are the evaluation's and the demo's open-vocabulary queries (config/curriculum.yaml
`evaluation.query_texts`).
"""

from __future__ import annotations

import hashlib

SYNONYMS: dict[str, tuple[str, ...]] = {
    "wall": ("wall", "white wall", "room wall"),
    "floor": ("floor", "flooring", "ground"),
    "ceiling": ("ceiling", "ceiling panel"),
    "chair": ("chair", "seat", "dining chair"),
    "table": ("table", "dining table", "coffee table"),
    "sofa": ("sofa", "couch"),
    "bed": ("bed", "double bed"),
    "cabinet": ("cabinet", "cupboard"),
    "bookshelf": ("bookshelf", "bookcase"),
    "desk": ("desk", "writing desk"),
    "door": ("door", "doorway"),
    "window": ("window", "window pane"),
    "toilet": ("toilet", "lavatory"),
    "sink": ("sink", "washbasin"),
    "bathtub": ("bathtub", "bath"),
    "picture": ("picture", "painting", "poster"),
    "refrigerator": ("refrigerator", "fridge"),
    "lamp": ("lamp", "floor lamp"),
}

def check_synonyms(table: dict[str, list[str] | tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The table with its names checked: non-empty lists of normalised names, none shared by two
    classes (a shared name would make one entity text stand for two classes)."""
    from pgov3d_core.labelling.parsing import normalize_label

    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for cls, names in table.items():
        if isinstance(names, str) or not names:
            raise ValueError(f"synonyms of {cls!r}: expected a non-empty list of names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or normalize_label(name) != name:
                raise ValueError(f"synonym {name!r} of {cls!r} is not written in normalised form "
                                 f"({normalize_label(str(name))!r}): stage 2 would read another text")
            if owner.setdefault(name, cls) != cls:
                raise ValueError(f"synonym {name!r} is listed for both {owner[name]!r} and {cls!r}")
        out[str(cls)] = tuple(names)
    return out


def draw_name(table: dict[str, tuple[str, ...]], class_name: str, seed: int, scene: str, frame_id: str) -> str:
    """The name of `class_name` in one frame: a uniform draw from its synonyms, from a hash of
    (seed, scene, frame, class) rather than a running RNG, so it does not depend on which frames
    were labelled before (resumed runs, batching, stride)."""
    names = table.get(class_name)
    if not names:
        return class_name
    digest = hashlib.sha256(f"{seed}\x00{scene}\x00{frame_id}\x00{class_name}".encode()).digest()
    return names[int.from_bytes(digest[:8], "little") % len(names)]


def table_fingerprint(table: dict[str, tuple[str, ...]]) -> str:
    text = "\n".join(f"{c}:{'|'.join(n)}" for c, n in sorted(table.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:10]
