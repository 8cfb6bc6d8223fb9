"""The canonical scene folder (ScanNet's exported-frame layout) and its lazy reader/writer.

    <scene>/
      meta.yaml                 depth_scale (units per metre), class_names, source, … (optional:
                                without it ScanNet defaults apply: depth in millimetres)
      color/<id>.jpg|png        RGB
      depth/<id>.png            uint16, value / depth_scale = metres, 0 = invalid
      pose/<id>.txt             4x4 camera-to-world
      intrinsic/intrinsic_depth.txt   4x4 (or 3x3) pinhole K of the depth image
      intrinsic/intrinsic_color.txt   K of the colour image (if its size differs from depth)
      label/<id>.png            optional, uint16: 0 = unlabelled, k = class_names[k - 1]
      scene.ply                 optional full-scene cloud: x y z, red green blue, label
                                (label: class index, -1 = unlabelled)

Frames are read one at a time (`scene[i]`), colour resized to the depth resolution so every
`Frame` has colour registered to depth pixels (ScanNet's colour and depth share one camera).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyListProperty, PlyParseError

from pgov3d_core.config import ConfigError, read_yaml
from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.fileio import atomic_write, atomic_write_bytes, natural_sort_key
from pgov3d_core.geometry import GeometryError, check_intrinsics, check_rigid

log = logging.getLogger(__name__)

META_FILE = "meta.yaml"
COLOR_EXTS = (".jpg", ".jpeg", ".png")


class SceneError(ValueError):
    """A scene folder that is missing files or holds unusable ones (the message names them)."""


@dataclass
class SceneMeta:
    depth_scale: float = 1000.0
    class_names: list[str] = field(default_factory=list)
    source: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> SceneMeta:
        try:
            data = read_yaml(path, "scene metadata")
        except ConfigError as exc:
            raise SceneError(str(exc)) from None
        scale = float(data.pop("depth_scale", 1000.0))
        if not np.isfinite(scale) or scale <= 0:
            raise SceneError(f"{path}: depth_scale must be a positive number, got {scale}")
        return cls(
            depth_scale=scale,
            class_names=[str(c) for c in data.pop("class_names", []) or []],
            source=str(data.pop("source", "")),
            extra=data,
        )

    def write(self, path: Path) -> None:
        data = {"depth_scale": self.depth_scale, "class_names": self.class_names, "source": self.source}
        data.update(self.extra)
        atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())




def read_matrix(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A whitespace-separated text matrix; SceneError naming the file when unreadable."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise SceneError(f"{path}: unreadable matrix ({exc})") from None
    if shape is not None and m.shape != shape:
        raise SceneError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got {m.shape[0]}x{m.shape[1]}")
    return m


def read_image(path: Path) -> np.ndarray:
    """An image file as a numpy array; SceneError naming the file when missing or corrupt."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.uint16 if im.mode != "I" else np.int32)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            return np.asarray(im)
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise SceneError(f"{path}: corrupt or unreadable image ({exc})") from None


class Scene:
    """A canonical scene folder, read lazily.

    Opening checks that every frame has colour, depth and pose, that intrinsics exist, and (with
    `check_poses`) that every pose is a finite rigid transform; problems raise SceneError naming
    the files. `depth_scale` overrides meta.yaml."""

    def __init__(self, root: str | os.PathLike, depth_scale: float | None = None, check_poses: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SceneError(f"{self.root}: not a directory")
        meta_path = self.root / META_FILE
        self.meta = SceneMeta.read(meta_path) if meta_path.exists() else SceneMeta(source="scannet-layout")
        if depth_scale is not None:
            self.meta.depth_scale = float(depth_scale)
        size = self.meta.extra.get("depth_size")
        self._depth_size: tuple[int, int] | None = tuple(size) if size else None
        self.frame_ids, self._color_paths = self._index_frames()
        self.K_depth = self._read_intrinsics("intrinsic_depth")
        color_k = self.root / "intrinsic" / "intrinsic_color.txt"
        self.K_color = self._read_intrinsics("intrinsic_color") if color_k.exists() else self.K_depth
        if check_poses:
            for fid in self.frame_ids:
                self.pose(fid)

    # -------------------------------------------------------------- indexing

    def _index_frames(self) -> tuple[list[str], dict[str, Path]]:
        dirs = {d: self.root / d for d in ("color", "depth", "pose")}
        missing_dirs = [str(p) for p in dirs.values() if not p.is_dir()]
        if missing_dirs:
            raise SceneError(f"{self.root}: missing folder(s) {', '.join(missing_dirs)}")
        color = {p.stem: p for p in dirs["color"].iterdir() if p.suffix.lower() in COLOR_EXTS}
        depth = {p.stem for p in dirs["depth"].glob("*.png")}
        pose = {p.stem for p in dirs["pose"].glob("*.txt")}
        ids = set(color) & depth & pose
        problems = []
        for name, have in (("color", set(color)), ("depth", depth), ("pose", pose)):
            extra = sorted(have - ids, key=natural_sort_key)
            if extra:
                problems.append(f"{name}/ has {len(extra)} id(s) missing elsewhere, e.g. {extra[:5]}")
        if problems:
            raise SceneError(f"{self.root}: frames do not match across folders: " + "; ".join(problems))
        if not ids:
            raise SceneError(f"{self.root}: no frames found in color/, depth/, pose/")
        ordered = sorted(ids, key=natural_sort_key)
        return ordered, {i: color[i] for i in ordered}

    def _read_intrinsics(self, name: str) -> np.ndarray:
        path = self.root / "intrinsic" / f"{name}.txt"
        if not path.exists():
            raise SceneError(f"{path}: file not found (every scene needs depth intrinsics)")
        m = read_matrix(path)
        try:
            return check_intrinsics(m, name=str(path))
        except GeometryError as exc:
            raise SceneError(str(exc)) from None

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Frame:
        return self.frame(self.frame_ids[index])

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    label_dir = "label"  # folder of per-frame label images

    @property
    def has_labels(self) -> bool:
        return (self.root / self.label_dir).is_dir()

    # -------------------------------------------------------------- per-frame reads

    def pose(self, frame_id: str) -> np.ndarray:
        path = self.root / "pose" / f"{frame_id}.txt"
        m = read_matrix(path, (4, 4))
        try:
            return check_rigid(m, name=str(path))
        except GeometryError as exc:
            raise SceneError(str(exc)) from None

    def depth(self, frame_id: str) -> np.ndarray:
        """Depth in metres (float32); 0 where invalid."""
        path = self.root / "depth" / f"{frame_id}.png"
        raw = read_image(path)
        if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32):
            raise SceneError(f"{path}: depth must be a single-channel 16-bit PNG, got {raw.dtype} {raw.shape}")
        # Every depth image of a scene shares one size (the one its intrinsics describe): the size
        # recorded in meta.yaml by write_scene, else the first depth image read.
        size = (raw.shape[1], raw.shape[0])
        if self._depth_size is None:
            self._depth_size = size
        elif size != self._depth_size:
            raise SceneError(
                f"{path}: depth is {size[0]}x{size[1]} but the scene's depth images are "
                f"{self._depth_size[0]}x{self._depth_size[1]}"
            )
        return raw.astype(np.float32) / np.float32(self.meta.depth_scale)

    def color(self, frame_id: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """RGB uint8, resized to `size` = (width, height) when given."""
        path = self._color_paths[frame_id]
        rgb = read_image(path)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        return rgb

    def raw_labels(self, frame_id: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """The label image `<label_dir>/<id>.png` as stored, nearest-resized to `size` = (width,
        height); None when the frame has none."""
        path = self.root / self.label_dir / f"{frame_id}.png"
        if not path.exists():
            return None
        raw = read_image(path)
        if raw.ndim != 2:
            raise SceneError(f"{path}: label image must be single-channel, got shape {raw.shape}")
        if size is not None and (raw.shape[1], raw.shape[0]) != tuple(size):
            raw = np.asarray(Image.fromarray(raw.astype(np.uint16)).resize(size, Image.NEAREST))
        return raw

    def labels(self, frame_id: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """Per-pixel class ids (int32, -1 = unlabelled), nearest-resized to `size`; None if absent."""
        raw = self.raw_labels(frame_id, size)
        return None if raw is None else raw.astype(np.int32) - 1

    def frame(self, frame_id: str) -> Frame:
        depth = self.depth(frame_id)
        size = (depth.shape[1], depth.shape[0])
        frame = Frame(
            color=self.color(frame_id, size),
            depth=depth,
            K=self.K_depth,
            pose=self.pose(frame_id),
            frame_id=frame_id,
            labels=self.labels(frame_id, size),
        )
        try:
            return frame.validate()
        except FrameError as exc:
            raise SceneError(f"{self.root}: {exc}") from None

    def iter_frames(self, stride: int = 1, skip_bad: bool = False) -> Iterator[Frame]:
        """Frames in order; with skip_bad, unreadable frames are logged and skipped."""
        for fid in self.frame_ids[::stride]:
            try:
                yield self.frame(fid)
            except SceneError as exc:
                if not skip_bad:
                    raise
                log.warning("skipping frame %s: %s", fid, exc)

    # -------------------------------------------------------------- full-scene cloud

    def cloud(self) -> PointCloud | None:
        path = self.root / "scene.ply"
        return read_ply_cloud(path) if path.exists() else None


@dataclass
class PointCloud:
    """A full-scene cloud: xyz (N, 3) float32, rgb (N, 3) uint8, labels (N,) int32 (-1 = none)."""

    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray


# ------------------------------------------------------------------ writing


def _save_image(path: Path, array: np.ndarray) -> None:
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    image = Image.fromarray(array)
    atomic_write(path, lambda f: image.save(f, format=Image.registered_extensions()[path.suffix.lower()], **kwargs))


def write_matrix(path: Path, m: np.ndarray) -> None:
    lines = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in np.asarray(m, dtype=np.float64))
    atomic_write_bytes(path, (lines + "\n").encode())


def depth_to_png(depth_m: np.ndarray, depth_scale: float) -> np.ndarray:
    """Metres → uint16 units; invalid (NaN, inf, ≤ 0) and out-of-range values become 0."""
    d = np.asarray(depth_m, dtype=np.float64) * depth_scale
    ok = np.isfinite(d) & (d > 0) & (d < 65535.5)
    out = np.zeros(d.shape, dtype=np.uint16)
    out[ok] = np.round(d[ok]).astype(np.uint16)
    return out


def write_scene(
    root: str | os.PathLike,
    frames: Iterable[Frame],
    class_names: list[str] | None = None,
    depth_scale: float = 1000.0,
    color_format: str = "png",
    cloud: PointCloud | None = None,
    source: str = "",
    extra_meta: dict | None = None,
) -> Path:
    """Write frames (and optionally a full-scene cloud) as a canonical scene folder."""
    root = Path(root)
    if color_format not in ("png", "jpg"):
        raise ValueError(f"color_format must be 'png' or 'jpg', got {color_format!r}")
    K = None
    size = None
    for i, frame in enumerate(frames):
        frame.validate()
        if size is None:
            size = [frame.width, frame.height]
        elif size != [frame.width, frame.height]:
            raise ValueError(f"frame {frame.frame_id!r} is {frame.width}x{frame.height}; the scene's are {size}")
        fid = frame.frame_id or str(i)
        _save_image(root / "color" / f"{fid}.{color_format}", np.asarray(frame.color, dtype=np.uint8))
        _save_image(root / "depth" / f"{fid}.png", depth_to_png(frame.depth, depth_scale))
        write_matrix(root / "pose" / f"{fid}.txt", frame.pose)
        if frame.labels is not None:
            lab = np.asarray(frame.labels, dtype=np.int64) + 1
            lab[lab < 0] = 0
            _save_image(root / "label" / f"{fid}.png", lab.astype(np.uint16))
        if K is None:
            K = np.asarray(frame.K, dtype=np.float64)
            K4 = np.eye(4)
            K4[:3, :3] = K
            write_matrix(root / "intrinsic" / "intrinsic_depth.txt", K4)
            write_matrix(root / "intrinsic" / "intrinsic_color.txt", K4)
    if K is None:
        raise ValueError("write_scene needs at least one frame")
    if cloud is not None:
        write_ply_cloud(root / "scene.ply", cloud)
    extra = {"depth_size": size, **(extra_meta or {})}
    SceneMeta(depth_scale, list(class_names or []), source, extra).write(root / META_FILE)
    return root


# ------------------------------------------------------------------ PLY (plyfile)

# Triangle meshes (ScanNet's: faces after the vertices) memory-map their faces instead of plyfile
# reading them one by one; other face lists fall back to that.
_TRIANGLE_LISTS = {"face": {"vertex_indices": 3, "vertex_index": 3}}


def _read_ply(path: Path) -> PlyData:
    with open(path, "rb") as f:
        try:
            return PlyData.read(f, mmap="c", known_list_len=_TRIANGLE_LISTS)
        except PlyElementParseError as exc:
            if exc.message != "unexpected list length":
                raise
        f.seek(0)
        return PlyData.read(f, mmap=False)


def read_ply_vertices(path: Path) -> dict[str, np.ndarray]:
    """The vertex element of a PLY file (ascii or binary, other elements ignored) as
    {property: array} in native byte order."""
    try:
        ply = _read_ply(path)
    except FileNotFoundError:
        raise SceneError(f"{path}: file not found") from None
    except (PlyParseError, ValueError) as exc:
        raise SceneError(f"{path}: malformed or truncated PLY ({exc})") from None
    if "vertex" not in ply or not ply["vertex"].properties:
        raise SceneError(f"{path}: PLY has no vertex element")
    vertex = ply["vertex"]
    out = {}
    for prop in vertex.properties:
        if isinstance(prop, PlyListProperty):
            raise SceneError(f"{path}: list properties on vertices are not supported")
        values = vertex[prop.name]
        out[prop.name] = np.array(values, dtype=values.dtype.newbyteorder("="))  # a copy, not the file's map
    return out


def read_ply_cloud(path: Path) -> PointCloud:
    v = read_ply_vertices(path)
    try:
        xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
    except KeyError:
        raise SceneError(f"{path}: PLY vertices need x, y, z") from None
    if all(k in v for k in ("red", "green", "blue")):
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.uint8)
    else:
        rgb = np.zeros_like(xyz, dtype=np.uint8)
    labels = v["label"].astype(np.int32) if "label" in v else np.full(len(xyz), -1, np.int32)
    return PointCloud(xyz, rgb, labels)


def write_ply_cloud(path: Path, cloud: PointCloud, extra: dict[str, np.ndarray] | None = None) -> None:
    """Binary little-endian PLY with x y z (float), red green blue (uchar), label (int) and any
    extra per-vertex scalar arrays."""
    n = len(cloud.xyz)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "<i4")]
    extra = extra or {}
    for name, arr in extra.items():
        fields.append((name, "<" + np.asarray(arr).dtype.str[1:]))
    rec = np.empty(n, dtype=fields)
    rec["x"], rec["y"], rec["z"] = cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]
    rec["red"], rec["green"], rec["blue"] = cloud.rgb[:, 0], cloud.rgb[:, 1], cloud.rgb[:, 2]
    rec["label"] = cloud.labels
    for name, arr in extra.items():
        rec[name] = arr
    ply = PlyData([PlyElement.describe(rec, "vertex")], byte_order="<")
    atomic_write(path, ply.write)
