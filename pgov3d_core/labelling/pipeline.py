"""Label the sampled frames of scene folders with pixel-wise entities, resumably.

`label_scenes` is what `pgov3d_core.tools.label_frames` and the curriculum call. For every
sampled frame it writes `<scene>/entities/<frame_id>.png` + `.json` (see `entities`), skipping
frames whose cached outputs are valid and come from the same labeller settings, and redoing
missing, corrupt or outdated ones (logging why). Models load only when some frame needs them,
so a run over a fully cached dataset needs no weights and no GPU.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pgov3d_core.data.scene import Scene, SceneError
from pgov3d_core.labelling.config import LabellingConfig
from pgov3d_core.labelling.entities import (
    OUTDATED,
    check_entities,
    overlay_path,
    read_entity_record,
    write_entities,
    write_overlay,
)
from pgov3d_core.labelling.labellers import Labeller, build_labeller, labeller_identity

log = logging.getLogger(__name__)


@dataclass
class SceneReport:
    root: Path
    frames: int = 0  # sampled frames
    written: int = 0  # labelled in this run
    cached: int = 0  # valid outputs kept
    failed: dict[str, str] = field(default_factory=dict)  # frame id → reason
    vocabulary: Counter = field(default_factory=Counter)  # label → number of frames containing it

    def summary(self) -> str:
        lines = [
            f"{self.root.name}: {self.frames} frames ({self.written} labelled, {self.cached} cached, "
            f"{len(self.failed)} failed), {len(self.vocabulary)} labels"
        ]
        width = max((len(k) for k in self.vocabulary), default=0)
        for label, n in sorted(self.vocabulary.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {label:<{width}}  {n}")
        for fid, why in self.failed.items():
            lines.append(f"  failed {fid}: {why}")
        return "\n".join(lines)


def is_scene_folder(path: Path) -> bool:
    return (path / "color").is_dir() and (path / "depth").is_dir()


def find_scenes(root: str | os.PathLike) -> list[Path]:
    """`root` itself when it is a scene folder, else its scene sub-folders (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise SceneError(f"{root}: not a directory")
    if is_scene_folder(root):
        return [root]
    scenes = sorted(p for p in root.iterdir() if p.is_dir() and is_scene_folder(p))
    if not scenes:
        raise SceneError(f"{root}: neither a scene folder (color/, depth/, …) nor a folder of scene folders")
    return scenes


def _frame_size(scene: Scene, frame_id: str) -> tuple[int, int]:
    """(width, height) of the frame's registered images (the depth resolution), from the PNG header."""
    path = scene.root / "depth" / f"{frame_id}.png"
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise SceneError(f"{path}: corrupt or unreadable image ({exc})") from None


def label_scenes(
    scene_root: str | os.PathLike,
    config: LabellingConfig | str | os.PathLike | None = None,
    *,
    labeller: str | None = None,
    stride: int | None = None,
    overlay: bool | None = None,
    batch_size: int | None = None,
    labeller_factory: Callable[[LabellingConfig], Labeller] = build_labeller,
    progress: bool = True,
    print_summary: bool = True,
) -> list[SceneReport]:
    """Label every `stride`-th frame of every scene under `scene_root` (a scene folder or a
    folder of scene folders). Keyword arguments override the config. Returns one report per
    scene; frames that could not be read are reported, not raised, so one bad frame does not
    stop a dataset. Raises WeightsError/ConfigError/LabellingError for problems of the setup."""
    cfg = config if isinstance(config, LabellingConfig) else LabellingConfig.load(config)
    cfg = cfg.with_overrides(labeller=labeller, stride=stride, overlay=overlay, batch_size=batch_size)
    identity = labeller_identity(cfg)
    built: list[Labeller] = []

    def get_labeller() -> Labeller:
        if not built:
            log.info("loading the %s labeller", cfg.labeller)
            built.append(labeller_factory(cfg))
        return built[0]

    reports = []
    for root in find_scenes(scene_root):
        try:
            report = _label_scene(root, cfg, identity, get_labeller, progress)
        except SceneError as exc:  # an unreadable scene folder must not stop the other scenes
            log.error("scene %s skipped: %s", root, exc)
            report = SceneReport(root=root, failed={"(scene)": str(exc)})
        reports.append(report)
        if print_summary:
            print(report.summary(), flush=True)
    return reports


def _label_scene(
    root: Path, cfg: LabellingConfig, identity: str, get_labeller: Callable[[], Labeller], progress: bool
) -> SceneReport:
    scene = Scene(root, check_poses=False)
    report = SceneReport(root=root)
    frame_ids = scene.frame_ids[:: cfg.stride]
    report.frames = len(frame_ids)
    todo: list[str] = []
    outdated: Counter = Counter()
    for fid in frame_ids:
        try:
            size = _frame_size(scene, fid)
        except SceneError as exc:
            report.failed[fid] = str(exc)
            log.warning("frame %s: %s", fid, exc)
            continue
        reason = check_entities(root, fid, size, identity)
        if reason is not None and reason.startswith(OUTDATED):
            outdated[reason] += 1
            todo.append(fid)
        elif reason is None:
            record = read_entity_record(root, fid)
            report.vocabulary.update(set(record["labels"]))
            report.cached += 1
            if cfg.overlay and not overlay_path(root, fid).exists():
                _overlay(scene, fid)
        else:
            if reason != "missing":
                log.warning("frame %s of %s is relabelled: %s", fid, root.name, reason)
            todo.append(fid)
    for why, n in outdated.items():  # one line per setting change, not one per frame
        log.warning("%s: %d frame(s) %s; they are relabelled", root.name, n, why)
    if todo:
        get_labeller()  # a setup error (weights, config) surfaces before any progress output
    bar = tqdm(total=len(todo), desc=root.name, unit="frame", disable=not progress or not todo, leave=False)
    try:
        for start in range(0, len(todo), cfg.batch_size):
            frames = []
            for fid in todo[start : start + cfg.batch_size]:
                try:
                    frame = scene.frame(fid)
                except SceneError as exc:
                    report.failed[fid] = str(exc)
                    log.warning("frame %s: %s", fid, exc)
                    bar.update(1)
                    continue
                why = get_labeller().cannot_label(frame)
                if why:
                    report.failed[fid] = why
                    log.warning("frame %s of %s: %s", fid, root.name, why)
                    bar.update(1)
                    continue
                frames.append(frame)
            if not frames:
                continue
            lab = get_labeller()
            results = lab.label(frames, scene.class_names, scene=root.name)
            for frame, result in zip(frames, results, strict=True):
                if result.entity.shape != frame.depth.shape:
                    raise RuntimeError(
                        f"labeller returned a {result.entity.shape} entity image for a {frame.depth.shape} frame"
                    )
                write_entities(root, frame.frame_id, result, {"name": lab.name, "identity": identity})
                report.vocabulary.update(set(result.labels))
                report.written += 1
                if cfg.overlay:
                    write_overlay(root, frame.frame_id, frame.color)
                bar.update(1)
    finally:
        bar.close()
    return report


def _overlay(scene: Scene, fid: str) -> None:
    try:
        size = _frame_size(scene, fid)
        write_overlay(scene.root, fid, scene.color(fid, size))
    except SceneError as exc:
        log.warning("no overlay for frame %s: %s", fid, exc)
