"""ScanNet v2, read in place.

A scene exported with the official SensReader (``python reader.py --export_color_images
--export_depth_images --export_poses --export_intrinsics``) already has the canonical layout:

    <scene>/color/<i>.jpg                       1296x968 RGB
    <scene>/depth/<i>.png                       640x480 uint16 millimetres (depth_scale 1000), 0 = invalid
    <scene>/pose/<i>.txt                        4x4 camera-to-world (rows of ``-inf`` = tracking lost)
    <scene>/intrinsic/intrinsic_color.txt       4x4 K of the colour camera
    <scene>/intrinsic/intrinsic_depth.txt       4x4 K of the depth camera (the one a Frame uses)
    <scene>/label-filt/<i>.png                  optional, label ids (0 = unannotated), NYU40 ids
                                                once passed through scannetv2-labels.combined.tsv
    <scene>/<scene>_vh_clean_2.ply              reconstructed mesh: vertex x y z red green blue alpha, faces
    <scene>/<scene>_vh_clean_2.labels.ply       same vertices, vertex ``label`` = NYU40 id

so nothing is converted: `open_scannet_scene` wraps `Scene` and only adds what ScanNet needs on top
(skipping frames whose pose is invalid, and mapping ``label-filt`` ids through a benchmark label set).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgov3d_core.data.label_sets import LabelSet, get_label_set
from pgov3d_core.data.readers._common import checked_pose, log
from pgov3d_core.data.scene import PointCloud, Scene, SceneError, read_matrix, read_ply_vertices

LABEL_DIR = "label-filt"


class ScanNetScene(Scene):
    """A ScanNet SensReader export read in place, minus frames with invalid poses.

    ScanNet writes a pose of ``-inf`` entries for frames where BundleFusion lost tracking. Those
    frames are dropped from `frame_ids` at opening, each with its reason in `skipped` and one
    summary warning in the log, instead of failing the whole scene as `Scene(check_poses=True)`
    would. Any other bad pose (malformed file, finite but non-rigid matrix) still raises SceneError:
    it means a damaged export, not a ScanNet convention.

    `labels()` reads ``label-filt/<id>.png`` and maps its ids (in `label_id_space`, NYU40 by default)
    to `label_set` indices, -1 for ids outside the set and for 0 (unannotated). Nothing is written."""

    label_dir = LABEL_DIR

    def __init__(
        self,
        scene_dir: str | os.PathLike,
        label_set: str | LabelSet = "scannet20",
        label_id_space: str = "nyu40",
        depth_scale: float | None = None,
    ):
        super().__init__(scene_dir, depth_scale=depth_scale, check_poses=False)
        self.label_set = get_label_set(label_set)
        self.label_id_space = label_id_space
        if self.has_labels and self.label_set.id_space != label_id_space:
            raise ValueError(
                f"{self.root / LABEL_DIR}: label images hold {label_id_space!r} ids but label set "
                f"{self.label_set.name!r} is defined on {self.label_set.id_space!r} ids"
            )
        self.meta.class_names = list(self.label_set.class_names)
        if not self.meta.source:
            self.meta.source = "scannet"
        self.skipped: dict[str, str] = {}
        valid = []
        for fid in self.frame_ids:
            path = self.root / "pose" / f"{fid}.txt"
            m = read_matrix(path, (4, 4))
            if not np.isfinite(m).all():
                self.skipped[fid] = f"{path}: pose contains inf/NaN (ScanNet marks frames without tracking this way)"
                log.debug("skipping ScanNet frame %s: %s", fid, self.skipped[fid])
                continue
            checked_pose(m, str(path))
            valid.append(fid)
        if self.skipped:
            ids = list(self.skipped)
            log.warning(
                "%s: skipping %d of %d frames with invalid (inf/NaN) poses, e.g. %s",
                self.root, len(ids), len(self.frame_ids), ids[:10],
            )
        if not valid:
            raise SceneError(f"{self.root}: no frame has a valid pose ({len(self.skipped)} frames with inf/NaN poses)")
        self.frame_ids = valid

    def labels(self, frame_id: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """`label-filt/<id>.png` mapped to label-set indices (int32, -1 = unlabelled or not in the
        set), nearest-resized to `size` = (width, height); None when the frame has no label image."""
        raw = self.raw_labels(frame_id, size)
        return None if raw is None else self.label_set.map_ids(raw, self.label_id_space)


def open_scannet_scene(
    scene_dir: str | os.PathLike, label_set: str | LabelSet = "scannet20", label_id_space: str = "nyu40"
) -> ScanNetScene:
    """Open a ScanNet SensReader export in place (writes nothing).

    Frames with ``-inf``/NaN poses are skipped (see `ScanNetScene.skipped` and the log); frames
    are 640x480 with colour resized onto the depth image and K = ``intrinsic_depth.txt``; depth is
    read in millimetres (no meta.yaml → depth_scale 1000). Labels come from ``label-filt/``
    (NYU40 ids by default) mapped to `label_set` ("scannet20", "scannet19"; "scannet200" needs
    ``label_id_space="scannet"``, i.e. label images holding raw ScanNet category ids)."""
    return ScanNetScene(scene_dir, label_set=label_set, label_id_space=label_id_space)


def read_scannet_cloud(scene_dir: str | os.PathLike, label_set: str | LabelSet = "scannet20") -> PointCloud:
    """The reconstructed mesh's vertices as a PointCloud, labelled with `label_set` indices.

    xyz and rgb come from ``<scene>_vh_clean_2.ply`` (the labels file's colours are class colours,
    not the scan's); labels from the ``label`` property (NYU40 id) of ``<scene>_vh_clean_2.labels.ply``
    mapped through `label_set` (-1 = unannotated or not in the set). Without a labels file
    (ScanNet's test split) every label is -1. Faces are ignored."""
    scene_dir = Path(scene_dir)
    labels_set = get_label_set(label_set)
    name = scene_dir.name
    mesh_path = scene_dir / f"{name}_vh_clean_2.ply"
    labels_path = scene_dir / f"{name}_vh_clean_2.labels.ply"
    v = read_ply_vertices(mesh_path)
    try:
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
        rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    except KeyError as exc:
        raise SceneError(f"{mesh_path}: PLY vertices lack property {exc}") from None
    if not np.isfinite(xyz).all():
        raise SceneError(f"{mesh_path}: vertex coordinates contain NaN or inf")
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    if not labels_path.exists():
        log.info("%s: no %s, cloud is unlabelled", scene_dir, labels_path.name)
        return PointCloud(xyz, rgb, np.full(len(xyz), -1, np.int32))
    if labels_set.id_space != "nyu40":
        raise ValueError(
            f"{labels_path}: vertex labels are NYU40 ids; label set {labels_set.name!r} needs "
            f"{labels_set.id_space!r} ids (ScanNet200 labels come from the aggregation/segmentation files)"
        )
    lv = read_ply_vertices(labels_path)
    if "label" not in lv:
        raise SceneError(f"{labels_path}: PLY vertices have no 'label' property")
    if len(lv["label"]) != len(xyz):
        raise SceneError(f"{labels_path}: {len(lv['label'])} vertices but {mesh_path.name} has {len(xyz)}")
    if all(k in lv for k in "xyz"):
        lxyz = np.stack([lv["x"], lv["y"], lv["z"]], axis=1)
        if not np.allclose(lxyz, xyz, atol=1e-4):
            raise SceneError(f"{labels_path}: vertex positions differ from {mesh_path.name} (different scenes?)")
    return PointCloud(xyz, rgb, labels_set.map_ids(lv["label"], "nyu40"))
