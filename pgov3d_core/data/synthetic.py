"""Deterministic synthetic labelled indoor rooms: the embedded default data of the project.

A room is an axis-aligned box (floor, four walls, ceiling) furnished with objects built from two
primitives, oriented boxes (rotated about the vertical axis) and vertical cylinders. Frames are
rendered by exact ray/primitive intersection (not point splatting), so depth, labels and the
full-scene cloud describe one and the same geometry to floating-point precision.

Conventions (shared with `pgov3d_core.data.scene` and `pgov3d_core.geometry`):

* World frame: metres, z up; the room spans [0, Lx] x [0, Ly] x [0, Lz] (floor at z = 0).
* Camera: OpenCV (x right, y down, z forward); poses are 4x4 camera-to-world, exactly rigid.
* Intrinsics: fx = fy = 0.9 * width, principal point at the image centre ((W-1)/2, (H-1)/2,
  pixel centres at integer coordinates, as `geometry.backproject` assumes).
* Depth: z-depth along the optical axis in metres (what RGB-D sensors report), not ray length.
  Rays are cast with direction R·K⁻¹[u, v, 1]ᵀ, whose camera z is 1, so the ray parameter of the
  hit *is* the z-depth.
* Classes: the fixed list `CLASS_NAMES` (same order for every scene, so ids compare across
  scenes); per-pixel class ids are 0-based indices into it (Frame labels; the label PNGs store
  id + 1, 0 = unlabelled). Instance ids are 1-based (0 = none; never rendered, the room is
  closed): the six room faces are instances 1-6, objects follow.
* Appearance: every class draws its colours from its own palette and texture style (wood grain,
  tiles, fabric weave, plaster, glass, art) with per-instance variation, times Lambertian shading
  from two fixed lights, times a small positional hash noise. Colour is a function of the world
  point, its surface normal and the part, so a surface has the same colour in every frame and in
  the scene cloud: a 3D network can learn class from colour + geometry.
* Determinism: everything derives from the seed through separate numpy random streams (layout,
  trajectory, cloud sampling), so a seed reproduces byte-identical files; nothing depends on
  time, hashing of Python objects or set order.

In-memory API (benchmarks): `SyntheticRoom.random(seed)`, `room.trajectory(n)`,
`room.render(K, pose, width, height)`, `room.sample_cloud(density)`. On-disk API:
`generate_scene`, `generate_dataset`, and the CLI `python -m pgov3d_core.data.synthetic --help`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import META_FILE, PointCloud, Scene, SceneError, write_ply_cloud, write_scene
from pgov3d_core.fileio import atomic_write_dir
from pgov3d_core.geometry import check_intrinsics, check_rigid

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: scene.ply holds only surface points some frame observes (cloud='observed')

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

DEFAULT_DENSITY = 2500.0  # cloud points per m²: one point per 2 cm x 2 cm cell (2 cm voxels)
DEPTH_SCALE = 1000.0  # depth PNG units per metre (ScanNet's millimetres)
ROOM_SIZE_RANGE = ((4.0, 8.0), (4.0, 8.0), (2.5, 3.0))
INSTANCE_DIR = "instance"

_EPS = 1e-9
# Texture styles.
PLAIN, WOOD, TILES, FABRIC, GLASS, ART, PLASTER = range(7)
# Two fixed lights (key from above, fill from the side) for Lambertian shading.
_LIGHT_KEY = np.array([0.4, 0.25, 1.0]) / np.linalg.norm([0.4, 0.25, 1.0])
_LIGHT_FILL = np.array([-0.7, 0.6, -0.2]) / np.linalg.norm([-0.7, 0.6, -0.2])
_NOISE_CELL = 0.01  # metres: cell size of the positional hash noise
_NEAR = 0.02  # metres: no surface is ever this close to the camera (used for culling only)
# The 12 edges of the 8 corners that Box/Cylinder.corners list (index = 4 * ix + 2 * iy + iz).
_CORNER_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


# ================================================================== primitives


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _jitter_grid(len_a: float, len_b: float, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified samples of [0, len_a] x [0, len_b]: one uniform point per grid cell of about
    `spacing` x `spacing`, so coverage is even (no clumps or holes, unlike i.i.d. sampling)."""
    na = max(1, int(math.ceil(len_a / spacing)))
    nb = max(1, int(math.ceil(len_b / spacing)))
    ia, ib = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    jitter = rng.random((2, na * nb))
    a = (ia.reshape(-1) + jitter[0]) * (len_a / na)
    b = (ib.reshape(-1) + jitter[1]) * (len_b / nb)
    return a, b


@dataclass(eq=False)
class Box:
    """An oriented box: `center` (3,) world, `half` (3,) half extents along its local axes, local
    axes = world axes rotated by `yaw` about z (furniture stands upright)."""

    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.float64).reshape(3)
        self.half = np.asarray(self.half, dtype=np.float64).reshape(3)
        self.yaw = float(self.yaw)
        self.rotation = _yaw_matrix(self.yaw)  # local → world

    def intersect(self, origin, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab method in the box frame. Returns the ray parameter t of the nearest hit in front
        of the origin (inf on a miss; the far face when the origin is inside) and the face normal
        oriented against the ray (the side the viewer sees)."""
        R = self.rotation
        o = (np.asarray(origin, dtype=np.float64) - self.center) @ R
        d = np.asarray(dirs, dtype=np.float64) @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1 = (-self.half - o) * inv
            t2 = (self.half - o) * inv
        t_lo = np.minimum(t1, t2)
        t_hi = np.maximum(t1, t2)
        t_near = t_lo.max(axis=-1)
        t_far = t_hi.min(axis=-1)
        hit = (t_far >= t_near) & (t_far > _EPS)
        outside = t_near > _EPS
        t = np.where(hit, np.where(outside, t_near, t_far), np.inf)
        axis = np.where(outside, t_lo.argmax(axis=-1), t_hi.argmin(axis=-1))
        d_axis = np.take_along_axis(d, axis[..., None], axis=-1)[..., 0]
        sign = np.where(d_axis > 0, -1.0, 1.0)
        normal = R.T[axis] * sign[..., None]
        return t, normal

    def corners(self) -> np.ndarray:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        return self.center + (signs * self.half) @ self.rotation.T

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        ext = np.abs(self.rotation) @ self.half
        return self.center - ext, self.center + ext

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        local = (points - self.center) @ self.rotation
        return np.all(np.abs(local) <= self.half + margin, axis=-1)

    def sample_surface(self, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Stratified points on all six faces with outward normals."""
        pts, nrm = [], []
        for k in range(3):
            i, j = [a for a in range(3) if a != k]
            for sign in (-1.0, 1.0):
                a, b = _jitter_grid(2 * self.half[i], 2 * self.half[j], spacing, rng)
                local = np.empty((len(a), 3))
                local[:, k] = sign * self.half[k]
                local[:, i] = a - self.half[i]
                local[:, j] = b - self.half[j]
                n = np.zeros(3)
                n[k] = sign
                pts.append(self.center + local @ self.rotation.T)
                nrm.append(np.broadcast_to(self.rotation @ n, local.shape))
        return np.concatenate(pts), np.concatenate(nrm)

    def axes_by_length(self) -> tuple[np.ndarray, np.ndarray]:
        """World directions of the longest and second-longest local axes (texture grain)."""
        order = np.argsort(-self.half, kind="stable")
        return self.rotation[:, order[0]].copy(), self.rotation[:, order[1]].copy()


@dataclass(eq=False)
class Cylinder:
    """A vertical cylinder: axis through `center` (x, y), `radius`, spanning z0 ≤ z ≤ z1."""

    center: np.ndarray
    radius: float
    z0: float
    z1: float

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=np.float64).reshape(2)
        self.radius, self.z0, self.z1 = float(self.radius), float(self.z0), float(self.z1)

    def intersect(self, origin, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Side: the quadratic |o_xy + t d_xy - c|² = r² restricted to z0 ≤ z ≤ z1; caps: the
        planes z = z0, z1 restricted to the disc. Nearest candidate in front of the origin wins
        (so rays starting inside hit the far surface). Returns (t, normal against the ray)."""
        origin = np.asarray(origin, dtype=np.float64)
        dirs = np.asarray(dirs, dtype=np.float64)
        ox, oy, oz = origin[..., 0] - self.center[0], origin[..., 1] - self.center[1], origin[..., 2]
        dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
        r = self.radius
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        c = ox * ox + oy * oy - r * r
        disc = b * b - 4.0 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = np.sqrt(np.maximum(disc, 0.0))
            side = [(-b - sq) / (2.0 * a), (-b + sq) / (2.0 * a)]
            caps = [(self.z0 - oz) / dz, (self.z1 - oz) / dz]
        cands = []
        with np.errstate(invalid="ignore"):  # inf * 0 on rays parallel to a cap or the axis
            for t in side:
                z = oz + t * dz
                ok = (disc >= 0) & (a > 0) & (z >= self.z0) & (z <= self.z1)
                cands.append(np.where(ok, t, np.inf))
            for t in caps:
                px, py = ox + t * dx, oy + t * dy
                ok = np.isfinite(t) & (px * px + py * py <= r * r)
                cands.append(np.where(ok, t, np.inf))
        stack = np.stack(np.broadcast_arrays(*cands), axis=-1)
        stack = np.where(stack > _EPS, stack, np.inf)  # also turns NaN into inf
        which = stack.argmin(axis=-1)
        t = np.take_along_axis(stack, which[..., None], axis=-1)[..., 0]
        t_safe = np.where(np.isfinite(t), t, 0.0)
        normal = np.zeros(t.shape + (3,))
        is_side = which < 2
        normal[..., 0] = np.where(is_side, (ox + t_safe * dx) / r, 0.0)
        normal[..., 1] = np.where(is_side, (oy + t_safe * dy) / r, 0.0)
        normal[..., 2] = np.where(which == 2, -1.0, np.where(which == 3, 1.0, 0.0))
        facing = np.sum(normal * dirs, axis=-1) > 0
        normal = np.where(facing[..., None], -normal, normal)
        return t, normal

    def corners(self) -> np.ndarray:
        r = self.radius
        return np.array(
            [[self.center[0] + sx * r, self.center[1] + sy * r, z] for sx in (-1, 1) for sy in (-1, 1)
             for z in (self.z0, self.z1)]
        )

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radius
        return (np.array([self.center[0] - r, self.center[1] - r, self.z0]),
                np.array([self.center[0] + r, self.center[1] + r, self.z1]))

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        dxy = points[:, :2] - self.center
        r = self.radius + margin
        return (np.sum(dxy * dxy, axis=1) <= r * r) & (points[:, 2] >= self.z0 - margin) & (
            points[:, 2] <= self.z1 + margin)

    def sample_surface(self, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Stratified points on the side (unrolled) and both caps (disc cut from a square grid)."""
        r, h = self.radius, self.z1 - self.z0
        a, b = _jitter_grid(2 * math.pi * r, h, spacing, rng)
        ang = a / r
        side = np.stack([self.center[0] + r * np.cos(ang), self.center[1] + r * np.sin(ang), self.z0 + b], axis=1)
        side_n = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], axis=1)
        pts, nrm = [side], [side_n]
        for z, nz in ((self.z0, -1.0), (self.z1, 1.0)):
            a, b = _jitter_grid(2 * r, 2 * r, spacing, rng)
            a, b = a - r, b - r
            keep = a * a + b * b <= r * r
            p = np.stack([self.center[0] + a[keep], self.center[1] + b[keep], np.full(int(keep.sum()), z)], axis=1)
            pts.append(p)
            nrm.append(np.broadcast_to(np.array([0.0, 0.0, nz]), p.shape))
        return np.concatenate(pts), np.concatenate(nrm)

    def axes_by_length(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])


@dataclass(eq=False)
class RoomFace:
    """One inside face of the room box [0, size]: face = 2 * axis + (1 if at size[axis] else 0),
    i.e. 0: x=0 wall, 1: x=Lx wall, 2: y=0 wall, 3: y=Ly wall, 4: floor, 5: ceiling. Rendered
    jointly by `intersect_room`; normals point into the room."""

    size: np.ndarray
    face: int

    def __post_init__(self):
        self.size = np.asarray(self.size, dtype=np.float64).reshape(3)

    @property
    def axis(self) -> int:
        return self.face // 2

    @property
    def inward_normal(self) -> np.ndarray:
        n = np.zeros(3)
        n[self.axis] = -1.0 if self.face % 2 else 1.0
        return n

    def sample_surface(self, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = self.axis
        i, j = [a for a in range(3) if a != k]
        a, b = _jitter_grid(self.size[i], self.size[j], spacing, rng)
        p = np.empty((len(a), 3))
        p[:, k] = self.size[k] if self.face % 2 else 0.0
        p[:, i], p[:, j] = a, b
        return p, np.broadcast_to(self.inward_normal, p.shape)

    def axes_by_length(self) -> tuple[np.ndarray, np.ndarray]:
        i, j = [a for a in range(3) if a != self.axis]
        if self.size[j] > self.size[i]:
            i, j = j, i
        return np.eye(3)[i], np.eye(3)[j]


def intersect_room(origin, dirs: np.ndarray, size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays from inside the room box [0, size] to its walls: per ray the exit parameter t, the
    face index (see RoomFace) and the inward normal. Every ray from inside hits exactly one face."""
    size = np.asarray(size, dtype=np.float64)
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(dirs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = (np.where(d > 0, size, 0.0) - o) / d
    tt = np.where(d != 0, tt, np.inf)
    axis = tt.argmin(axis=-1)
    t = np.take_along_axis(tt, axis[..., None], axis=-1)[..., 0]
    d_axis = np.take_along_axis(d, axis[..., None], axis=-1)[..., 0]
    face = 2 * axis + (d_axis > 0)
    normal = np.eye(3)[axis] * np.where(d_axis > 0, -1.0, 1.0)[..., None]
    return t, face, normal


# ================================================================== parts, objects, appearance


@dataclass(eq=False)
class Part:
    """A primitive with its label and appearance. `color` is the base RGB in [0, 1]; `style` one
    of PLAIN, WOOD, TILES, FABRIC, GLASS, ART, PLASTER with spatial frequency `freq` (1/m) and
    amplitude `pattern_amp`; `noise_amp` scales the positional hash noise. `grain`/`grain2` are
    the texture's world directions (default: the shape's longest axes)."""

    shape: Box | Cylinder | RoomFace
    class_id: int
    instance_id: int
    color: np.ndarray = field(default_factory=lambda: np.array([0.6, 0.6, 0.6]))
    style: int = PLAIN
    freq: float = 1.0
    pattern_amp: float = 0.0
    noise_amp: float = 0.0
    grain: np.ndarray | None = None
    grain2: np.ndarray | None = None

    def __post_init__(self):
        self.color = np.asarray(self.color, dtype=np.float64).reshape(3)
        g1, g2 = self.shape.axes_by_length()
        self.grain = g1 if self.grain is None else np.asarray(self.grain, dtype=np.float64)
        self.grain2 = g2 if self.grain2 is None else np.asarray(self.grain2, dtype=np.float64)


@dataclass(eq=False)
class SceneObject:
    """One labelled instance (a chair, a table, …) made of one or more parts."""

    class_name: str
    instance_id: int
    parts: list[Part]

    @property
    def class_id(self) -> int:
        return CLASS_ID[self.class_name]


class Variant(NamedTuple):
    palette: tuple[tuple[int, int, int], ...]
    style: int = PLAIN
    freq: tuple[float, float] = (1.0, 1.0)
    pattern_amp: float = 0.0
    noise_amp: float = 0.03


_WOODS = ((150, 108, 68), (178, 138, 92), (112, 78, 50), (196, 160, 112), (135, 95, 60))
_DARK_WOODS = ((95, 65, 42), (80, 55, 38), (110, 72, 45))
_WHITES = ((240, 240, 236), (232, 234, 236), (244, 240, 230))
_GREYS = ((128, 130, 135), (90, 95, 100), (160, 160, 158))
_BLACKS = ((45, 45, 48), (60, 58, 56))
_METALS = ((165, 168, 172), (110, 112, 118), (60, 60, 64), (190, 165, 100))
_FABRICS = ((120, 122, 128), (70, 90, 135), (85, 115, 85), (150, 70, 60), (190, 175, 150), (95, 80, 110))
_BRIGHT = ((170, 40, 40), (40, 90, 160), (60, 130, 70), (200, 160, 40), (120, 60, 130), (220, 220, 210),
           (40, 40, 40), (210, 110, 40))

# class → role → variants (one variant and one palette colour is drawn per instance and role).
APPEARANCE: dict[str, dict[str, tuple[Variant, ...]]] = {
    "wall": {"main": (Variant(((232, 228, 218), (218, 226, 232), (236, 226, 206), (214, 224, 210), (230, 218, 214)),
                              PLASTER, (0.4, 0.9), 0.03, 0.02),)},
    "floor": {"main": (Variant(_WOODS, WOOD, (5.0, 9.0), 0.08, 0.03),
                       Variant(((170, 170, 172), (205, 195, 175), (150, 140, 130), (200, 200, 205)), TILES,
                               (1.7, 3.3), 0.1, 0.03))},
    "ceiling": {"main": (Variant(((246, 246, 244), (240, 240, 240), (244, 242, 236)), PLAIN, (1, 1), 0.0, 0.015),)},
    "chair": {"main": (Variant(_DARK_WOODS + _WOODS[:2], WOOD, (10.0, 16.0), 0.07, 0.03),
                       Variant(_FABRICS + _BLACKS, FABRIC, (18.0, 26.0), 0.08, 0.05)),
              "frame": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02), Variant(_DARK_WOODS, WOOD, (10.0, 16.0), 0.1))},
    "table": {"main": (Variant(_WOODS, WOOD, (6.0, 12.0), 0.08, 0.03), Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.02)),
              "frame": (Variant(_WOODS, WOOD, (6.0, 12.0), 0.1), Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02))},
    "sofa": {"main": (Variant(_FABRICS, FABRIC, (14.0, 22.0), 0.1, 0.05),
                      Variant(((110, 70, 50), (60, 45, 40), (170, 120, 80)), PLAIN, (1, 1), 0.0, 0.03))},
    "bed": {"main": (Variant(_WOODS, WOOD, (6.0, 12.0), 0.08), Variant(_GREYS, FABRIC, (14.0, 22.0), 0.08, 0.05)),
            "bedding": (Variant(((235, 235, 240), (200, 215, 235), (235, 215, 215), (220, 230, 210), (190, 190, 200)),
                                FABRIC, (12.0, 20.0), 0.06, 0.04),),
            "pillow": (Variant(_WHITES + ((230, 225, 200),), PLAIN, (1, 1), 0.0, 0.03),)},
    "cabinet": {"main": (Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.02), Variant(_WOODS, WOOD, (6.0, 12.0), 0.08),
                         Variant(_GREYS, PLAIN, (1, 1), 0.0, 0.02)),
                "handle": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02),)},
    "bookshelf": {"main": (Variant(_WOODS, WOOD, (8.0, 14.0), 0.08), Variant(_WHITES + _BLACKS, PLAIN, (1, 1), 0.0)),
                  "books": (Variant(_BRIGHT, ART, (8.0, 20.0), 0.08, 0.05),)},
    "desk": {"main": (Variant(((200, 200, 198), (55, 55, 60), (215, 195, 160)), PLAIN, (1, 1), 0.0, 0.02),
                      Variant(_WOODS, WOOD, (6.0, 12.0), 0.08)),
             "handle": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02),)},
    "door": {"main": (Variant(_WOODS, WOOD, (5.0, 10.0), 0.08), Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.02)),
             "frame": (Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.02), Variant(_DARK_WOODS, WOOD, (5.0, 10.0), 0.1)),
             "handle": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02),)},
    "window": {"frame": (Variant(_WHITES + ((70, 70, 75),), PLAIN, (1, 1), 0.0, 0.02),),
               "glass": (Variant(((170, 200, 228), (185, 210, 225), (150, 180, 210)), GLASS, (0.6, 1.0), 0.12, 0.01),)},
    "toilet": {"main": (Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.01),)},
    "sink": {"main": (Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.01),), "handle": (Variant(_METALS, PLAIN),)},
    "bathtub": {"main": (Variant(_WHITES, PLAIN, (1, 1), 0.0, 0.01),), "handle": (Variant(_METALS, PLAIN),)},
    "picture": {"frame": (Variant(_DARK_WOODS + _BLACKS + ((190, 165, 100),), WOOD, (20.0, 30.0), 0.08),),
                "art": (Variant(_BRIGHT, ART, (3.0, 9.0), 0.35, 0.06),)},
    "refrigerator": {"main": (Variant(((236, 236, 236), (185, 188, 192), (40, 40, 44)), PLAIN, (1, 1), 0.0, 0.015),),
                     "handle": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02),)},
    "lamp": {"frame": (Variant(_METALS, PLAIN, (1, 1), 0.0, 0.02),),
             "shade": (Variant(((240, 225, 190), (235, 235, 230), (200, 180, 150)), FABRIC, (20.0, 30.0), 0.06),)},
}


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _hash01(ijk: np.ndarray, salt: np.ndarray | int) -> np.ndarray:
    """Deterministic uniform [0, 1) value per integer cell (N, k) and salt: positional noise that
    is the same for a world point in every view."""
    ijk = np.asarray(ijk, dtype=np.int64).astype(np.uint64)
    primes = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
    h = np.asarray(salt, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)
    for k in range(ijk.shape[1]):
        h = _mix64(h ^ (ijk[:, k] * np.uint64(primes[k])))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _pattern(style: int, g: np.ndarray, g2: np.ndarray, f: np.ndarray, p: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Texture modulation in about [-1, 1] (N,) or (N, 3) for one style, from the texture
    coordinates g, g2 (metres along grain, grain2), frequency f and the world point p."""
    tau = 2.0 * math.pi
    if style == WOOD:
        return np.sin(tau * f * g + 0.8 * np.sin(tau * 0.25 * f * g2 + 0.5 * np.sin(tau * 0.9 * g)))
    if style == TILES:
        u, v = f * g, f * g2
        fu, fv = u - np.floor(u), v - np.floor(v)
        grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) < 0.035
        tile = _hash01(np.stack([np.floor(u), np.floor(v)], axis=1), salt) * 2.0 - 1.0
        return np.where(grout, -2.5, 0.5 * tile)
    if style == FABRIC:
        return np.sin(tau * f * g) * np.sin(tau * f * g2)
    if style == GLASS:
        return np.sin(tau * f * (p[:, 2] + 0.5 * g))
    if style == ART:
        return np.stack([np.sin(tau * f * g), np.sin(tau * 0.8 * f * g2 + 1.0),
                         np.sin(tau * 0.6 * f * (g + g2) + 2.0)], axis=1)
    if style == PLASTER:
        return np.sin(tau * f * g) * np.sin(tau * f * g2 + 0.7) + 0.5 * np.sin(tau * 1.7 * f * (g - g2))
    return np.zeros_like(g)


# ================================================================== rendering output


class Render(NamedTuple):
    """One rendered view: rgb (H, W, 3) uint8, depth (H, W) float32 z-depth in metres, class_ids
    (H, W) int32 indices into CLASS_NAMES, instance_ids (H, W) int32 (1-based)."""

    rgb: np.ndarray
    depth: np.ndarray
    class_ids: np.ndarray
    instance_ids: np.ndarray


@dataclass
class SurfaceSamples:
    """Points on the visible surfaces: xyz (N, 3), outward normals (N, 3), rgb (N, 3) uint8, class
    labels (N,) int32, instance ids (N,) int32."""

    xyz: np.ndarray
    normals: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    instances: np.ndarray

    def cloud(self) -> PointCloud:
        return PointCloud(self.xyz.astype(np.float32), self.rgb, self.labels)


def default_intrinsics(width: int, height: int, focal_scale: float = 0.9) -> np.ndarray:
    """Pinhole K with fx = fy = focal_scale * width (0.9: ~58° horizontal FOV, like ScanNet's
    577.9 px at 640 wide) and the principal point at the image centre."""
    f = focal_scale * width
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def look_pose(position, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world pose (OpenCV camera) at `position` looking along heading `yaw` (radians
    from +x towards +y) tilted up by `pitch` (negative looks down), rolled by `roll`."""
    cp = math.cos(pitch)
    fwd = np.array([cp * math.cos(yaw), cp * math.sin(yaw), math.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = math.cos(roll), math.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, position
    return pose


def pixel_rays(K, pose, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera origin (3,) and world ray directions (H, W, 3) R·K⁻¹[u, v, 1]ᵀ; each direction's
    camera z component is 1, so the hit parameter t equals the z-depth."""
    K = check_intrinsics(K)
    pose = check_rigid(pose)
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    return pose[:3, 3].copy(), cam @ pose[:3, :3].T


# ================================================================== the room


class SyntheticRoom:
    """A furnished box room: `size` (Lx, Ly, Lz), objects (besides the six room faces, which are
    always present) and the camera path (an ellipse at `path_center` with `path_radii`, kept
    clear of furniture by `random`)."""

    def __init__(
        self,
        size: Sequence[float],
        objects: Sequence[SceneObject] = (),
        seed: int = 0,
        path_center: Sequence[float] | None = None,
        path_radii: Sequence[float] | None = None,
        structure_looks: dict[str, dict] | None = None,
    ):
        self.size = np.asarray(size, dtype=np.float64).reshape(3)
        self.seed = int(seed)
        self.path_center = np.asarray(self.size[:2] / 2 if path_center is None else path_center, dtype=np.float64)
        radii = 0.22 * self.size[:2] if path_radii is None else path_radii
        self.path_radii = np.asarray(radii, dtype=np.float64)
        self.structure = self._structure_objects(structure_looks)
        self.objects: list[SceneObject] = list(objects)
        self.parts: list[Part] = [p for obj in self.all_objects for p in obj.parts]
        self._build_tables()

    # ---------------------------------------------------------------- construction

    def _structure_objects(self, looks: dict[str, dict] | None) -> list[SceneObject]:
        """Six room faces (instance id = face + 1); `looks` maps wall/floor/ceiling to Part keyword
        arguments (colour, style, …), plain default colours otherwise."""
        out = []
        for face in range(6):
            name = "wall" if face < 4 else ("floor" if face == 4 else "ceiling")
            if looks and name in looks:
                kw = dict(looks[name])
            else:
                kw = {"color": {"wall": (0.9, 0.89, 0.86), "floor": (0.6, 0.45, 0.3), "ceiling": (0.95,) * 3}[name]}
            out.append(SceneObject(name, face + 1, [Part(RoomFace(self.size, face), CLASS_ID[name], face + 1, **kw)]))
        return out

    @property
    def all_objects(self) -> list[SceneObject]:
        return self.structure + self.objects

    def _build_tables(self) -> None:
        parts = self.parts
        self._class = np.array([p.class_id for p in parts], dtype=np.int32)
        self._inst = np.array([p.instance_id for p in parts], dtype=np.int32)
        self._color = np.array([p.color for p in parts])
        self._style = np.array([p.style for p in parts], dtype=np.int64)
        self._freq = np.array([p.freq for p in parts])
        self._pamp = np.array([p.pattern_amp for p in parts])
        self._namp = np.array([p.noise_amp for p in parts])
        self._grain = np.array([p.grain for p in parts])
        self._grain2 = np.array([p.grain2 for p in parts])
        self._salt = _mix64(np.uint64(self.seed & 0xFFFFFFFF) * np.uint64(1 << 32)
                            + np.arange(len(parts), dtype=np.uint64))
        self._shell_part = np.array([i for i, p in enumerate(parts) if isinstance(p.shape, RoomFace)], dtype=np.int64)
        self._solid = [i for i, p in enumerate(parts) if not isinstance(p.shape, RoomFace)]
        self._bounds = {i: parts[i].shape.bounds() for i in self._solid}

    @classmethod
    def random(cls, seed: int, size_range=ROOM_SIZE_RANGE) -> SyntheticRoom:
        """A random furnished room, a pure function of `seed`."""
        return _RoomBuilder(int(seed), size_range).build()

    @property
    def instance_classes(self) -> dict[int, str]:
        return {obj.instance_id: obj.class_name for obj in self.all_objects}

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.class_name] = counts.get(obj.class_name, 0) + 1
        return {
            "seed": self.seed,
            "room_size": [round(float(v), 4) for v in self.size],
            "n_objects": len(self.objects),
            "n_primitives": len(self._solid),
            "object_counts": {c: counts[c] for c in CLASS_NAMES if c in counts},
        }

    # ---------------------------------------------------------------- camera

    def trajectory(self, n_frames: int, step_deg: float | None = None) -> list[np.ndarray]:
        """Smooth camera path: positions on the free ellipse around the room centre at 1.25–1.55 m,
        heading across the room (inward, ± a per-room offset, ± a slow sway of ~50°, so views span
        the far walls, their furniture, the room centre and at times the ceiling), pitch -23°…-2°,
        roll ±2°. Successive
        frames advance `step_deg` along the ellipse (default min(12°, 360°/n): one loop, or an arc
        for few frames), so consecutive views overlap by most of the ~58° field of view."""
        rng = np.random.default_rng([self.seed, 1])
        phi0 = rng.uniform(0, 2 * math.pi)
        direction = 1.0 if rng.random() < 0.5 else -1.0
        beta = math.pi + rng.uniform(-0.5, 0.5)
        psi = rng.uniform(0, 2 * math.pi, 4)
        step = math.radians(step_deg if step_deg is not None else min(12.0, 360.0 / max(n_frames, 1)))
        poses = []
        for i in range(n_frames):
            s = i * step
            phi = phi0 + direction * s
            pos = np.array([
                self.path_center[0] + self.path_radii[0] * math.cos(phi),
                self.path_center[1] + self.path_radii[1] * math.sin(phi),
                1.4 + 0.15 * math.sin(0.8 * s + psi[0]),
            ])
            yaw = phi + beta + 0.9 * math.sin(0.6 * s + psi[1])
            pitch = -0.22 + 0.18 * math.sin(0.9 * s + psi[2])
            roll = 0.03 * math.sin(1.1 * s + psi[3])
            poses.append(look_pose(pos, yaw, pitch, roll))
        return poses

    # ---------------------------------------------------------------- ray casting

    def cast(self, origin, dirs: np.ndarray, windows: dict[int, tuple[slice, slice]] | None = None):
        """Nearest hit of rays (origin (3,) inside the room, dirs (..., 3)) over all parts.

        Returns (t, part index, normal against the ray). `windows` (render only) maps a solid
        part to the sub-array of a (H, W, 3) `dirs` that can hit it; parts missing from it are
        skipped, so culled parts cost nothing."""
        t_best, face, normal = intersect_room(origin, dirs, self.size)
        part = self._shell_part[face]
        for k in self._solid:
            if windows is None:
                win = (Ellipsis,)
            elif k in windows:
                win = windows[k]
            else:
                continue
            t, n = self.parts[k].shape.intersect(origin, dirs[win])
            tb = t_best[win]
            closer = t < tb
            if not closer.any():
                continue
            tb[closer] = t[closer]
            part[win][closer] = k
            normal[win][closer] = n[closer]
        return t_best, part, normal

    def _windows(self, K: np.ndarray, pose: np.ndarray, width: int, height: int) -> dict[int, tuple[slice, slice]]:
        """Pixel rectangle of each solid part: the projection of its bounding corners, clipped to
        the half-space z ≥ _NEAR in front of the camera (edges crossing the plane contribute their
        crossing points); parts entirely closer than _NEAR are left out. Hits closer than _NEAR
        cannot occur (the camera path keeps clear of furniture), so the culling is exact."""
        R, o = pose[:3, :3], pose[:3, 3]
        out = {}
        for k in self._solid:
            cam = (self.parts[k].shape.corners() - o) @ R
            z = cam[:, 2]
            front = z >= _NEAR
            if not front.any():
                continue
            if not front.all():
                a, b = _CORNER_EDGES[:, 0], _CORNER_EDGES[:, 1]
                cross = front[a] != front[b]
                a, b = a[cross], b[cross]
                s = ((_NEAR - z[a]) / (z[b] - z[a]))[:, None]
                cam = np.concatenate([cam[front], cam[a] + s * (cam[b] - cam[a])])
                z = cam[:, 2]
            u = K[0, 0] * cam[:, 0] / z + K[0, 1] * cam[:, 1] / z + K[0, 2]
            v = K[1, 1] * cam[:, 1] / z + K[1, 2]
            c0, c1 = max(0, int(math.floor(u.min()))), min(width, int(math.ceil(u.max())) + 1)
            r0, r1 = max(0, int(math.floor(v.min()))), min(height, int(math.ceil(v.max())) + 1)
            if c0 < c1 and r0 < r1:
                out[k] = (slice(r0, r1), slice(c0, c1))
        return out

    def render(self, K, pose, width: int, height: int) -> Render:
        """Render one view: exact nearest hit per pixel ray (no splatting), z-depth, labels,
        instance ids and shaded colour."""
        K = check_intrinsics(K)
        pose = check_rigid(pose)
        origin, dirs = pixel_rays(K, pose, width, height)
        t, part, normal = self.cast(origin, dirs, self._windows(K, pose, width, height))
        points = origin + t[..., None] * dirs
        rgb = self.shade(points.reshape(-1, 3), normal.reshape(-1, 3), part.reshape(-1)).reshape(height, width, 3)
        return Render(rgb, t.astype(np.float32), self._class[part], self._inst[part])

    def frame(self, K, pose, width: int, height: int, frame_id: str = "") -> tuple[Frame, np.ndarray]:
        """A rendered view as a `Frame` (labels = class ids) plus its instance-id image."""
        r = self.render(K, pose, width, height)
        frame = Frame(color=r.rgb, depth=r.depth, K=np.asarray(K, dtype=np.float64), pose=np.asarray(pose),
                      frame_id=frame_id, labels=r.class_ids)
        return frame, r.instance_ids

    def render_frames(
        self, n_frames: int = 30, width: int = 640, height: int = 480
    ) -> Iterator[tuple[Frame, np.ndarray]]:
        """(Frame, instance ids) along `trajectory(n_frames)` with `default_intrinsics`; frame ids
        "0", "1", …"""
        K = default_intrinsics(width, height)
        for i, pose in enumerate(self.trajectory(n_frames)):
            yield self.frame(K, pose, width, height, str(i))

    # ---------------------------------------------------------------- appearance

    def shade(self, points: np.ndarray, normals: np.ndarray, part_idx: np.ndarray) -> np.ndarray:
        """Colour (N, 3) uint8 of surface points of the given parts with the given normals (facing
        the viewer): base colour x texture x (1 + hash noise) x Lambertian shading."""
        n_pts = len(points)
        base = self._color[part_idx]
        style = self._style[part_idx]
        salt = self._salt[part_idx]
        g = np.einsum("ij,ij->i", points, self._grain[part_idx])
        g2 = np.einsum("ij,ij->i", points, self._grain2[part_idx])
        mod = np.ones((n_pts, 3))
        for s in np.unique(style):
            if s == PLAIN:
                continue
            m = style == s
            pat = _pattern(int(s), g[m], g2[m], self._freq[part_idx[m]], points[m], salt[m])
            amp = self._pamp[part_idx[m]]
            mod[m] += (amp[:, None] * pat) if pat.ndim == 2 else (amp * pat)[:, None]
        cells = np.floor(points / _NOISE_CELL + 0.5)
        noise = _hash01(cells, salt) * 2.0 - 1.0
        mod *= (1.0 + self._namp[part_idx] * noise)[:, None]
        key = np.clip(normals @ _LIGHT_KEY, 0.0, None)
        fill = np.clip(normals @ _LIGHT_FILL, 0.0, None)
        shade = 0.5 + 0.35 * key + 0.2 * fill
        rgb = np.clip(base * mod * shade[:, None], 0.0, 1.0)
        return np.round(rgb * 255.0).astype(np.uint8)

    # ---------------------------------------------------------------- full-scene cloud

    def sample_points(self, density: float = DEFAULT_DENSITY, margin: float = 2e-3) -> SurfaceSamples:
        """Stratified points on all surfaces (about `density` per m²) that can be seen from inside
        the room: points of a part inside another solid (inflated by `margin`) are dropped, as
        are object points on or outside the room boundary (box faces standing on the floor or
        flush with a wall). Coloured with the same `shade` as the renderer (outward normals)."""
        if density <= 0:
            raise ValueError(f"density must be positive, got {density}")
        spacing = 1.0 / math.sqrt(density)
        rng = np.random.default_rng([self.seed, 2])
        xyz, nrm, idx = [], [], []
        for k, part in enumerate(self.parts):
            pts, normals = part.shape.sample_surface(spacing, rng)
            keep = np.ones(len(pts), dtype=bool)
            if not isinstance(part.shape, RoomFace):
                keep &= np.all((pts > margin) & (pts < self.size - margin), axis=1)
                lo, hi = self._bounds[k]
            else:
                lo, hi = pts.min(axis=0), pts.max(axis=0)
            for j in self._solid:
                if j == k:
                    continue
                blo, bhi = self._bounds[j]
                if np.any(blo - margin > hi) or np.any(bhi + margin < lo):
                    continue
                keep[keep] &= ~self.parts[j].shape.contains(pts[keep], margin)
            xyz.append(pts[keep])
            nrm.append(np.asarray(normals)[keep])
            idx.append(np.full(int(keep.sum()), k, dtype=np.int64))
        xyz_a, nrm_a, idx_a = np.concatenate(xyz), np.concatenate(nrm), np.concatenate(idx)
        rgb = self.shade(xyz_a, nrm_a, idx_a)
        return SurfaceSamples(xyz_a, nrm_a, rgb, self._class[idx_a], self._inst[idx_a])

    def observed_mask(self, points: np.ndarray, K: np.ndarray, poses: Sequence[np.ndarray], width: int, height: int,
                      max_depth: float | None = None, chunk: int = 200_000) -> np.ndarray:
        """Which `points` (N, 3) on the room's surfaces at least one of the views (`K`, camera-to-world
        `poses`, `width` x `height`) observes: inside the image, z-depth in (_NEAR, max_depth], and the
        first hit of the ray from the camera centre towards the point is the point itself (exact ray
        casting, not a depth-map lookup, so it does not depend on the render resolution)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        K = check_intrinsics(K)
        seen = np.zeros(len(points), dtype=bool)
        for pose in poses:
            pose = check_rigid(pose)
            R, o = pose[:3, :3], pose[:3, 3]
            windows = self._windows(K, pose, width, height)
            todo = np.flatnonzero(~seen)
            for start in range(0, len(todo), chunk):
                idx = todo[start:start + chunk]
                cam = (points[idx] - o) @ R
                z = cam[:, 2]
                front = z > _NEAR
                if max_depth is not None:
                    front &= z <= max_depth
                zc = np.where(front, z, 1.0)
                u = K[0, 0] * cam[:, 0] / zc + K[0, 1] * cam[:, 1] / zc + K[0, 2]
                v = K[1, 1] * cam[:, 1] / zc + K[1, 2]
                # pixel centres at integers (pixel_rays), so the image spans [-0.5, width - 0.5)
                inside = front & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
                idx = idx[inside]
                if not len(idx):
                    continue
                u = np.clip(np.floor(u[inside]), 0, width - 1)  # a cell of every part window holding the point
                v = np.clip(np.floor(v[inside]), 0, height - 1)
                ray = points[idx] - o
                dist = np.linalg.norm(ray, axis=1)
                dirs = ray / dist[:, None]
                t, _, _ = intersect_room(o, dirs, self.size)
                # An occluder of an in-view point lies on its pixel's ray, so within the part's pixel
                # window (`_windows`, a superset of its projection): the same exact culling as render.
                for k, (rows, cols) in windows.items():
                    sel = np.flatnonzero((u >= cols.start) & (u < cols.stop) & (v >= rows.start) & (v < rows.stop))
                    if len(sel):
                        tk, _ = self.parts[k].shape.intersect(o, dirs[sel])
                        t[sel] = np.minimum(t[sel], tk)
                seen[idx[t >= dist - (2e-3 + 1e-3 * dist)]] = True
        return seen

    def sample_cloud(self, density: float = DEFAULT_DENSITY) -> PointCloud:
        """The full-scene labelled cloud (see `sample_points`)."""
        return self.sample_points(density).cloud()


# ================================================================== random layout


@dataclass
class _Footprint:
    """Floor-plan occupancy: oriented rectangle (centre, half extents, yaw) over z0 ≤ z ≤ z1."""

    cx: float
    cy: float
    hx: float
    hy: float
    yaw: float
    z0: float
    z1: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([c, s]), np.array([-s, c])

    def overlaps(self, other: _Footprint, margin: float = 0.0) -> bool:
        if self.z1 <= other.z0 or other.z1 <= self.z0:
            return False
        a1, a2 = self.axes()
        b1, b2 = other.axes()
        d = np.array([other.cx - self.cx, other.cy - self.cy])
        for ax in (a1, a2, b1, b2):
            ra = self.hx * abs(a1 @ ax) + self.hy * abs(a2 @ ax) + margin / 2
            rb = other.hx * abs(b1 @ ax) + other.hy * abs(b2 @ ax) + margin / 2
            if abs(d @ ax) > ra + rb:
                return False
        return True

    def distance_to(self, pts: np.ndarray) -> float:
        """Smallest distance from points (N, 2) to the rectangle."""
        a1, a2 = self.axes()
        d = pts - [self.cx, self.cy]
        q = np.stack([np.abs(d @ a1) - self.hx, np.abs(d @ a2) - self.hy], axis=1)
        return float(np.min(np.linalg.norm(np.maximum(q, 0.0), axis=1)))

    def corners(self) -> np.ndarray:
        a1, a2 = self.axes()
        c = np.array([self.cx, self.cy])
        return np.array([c + sx * self.hx * a1 + sy * self.hy * a2 for sx in (-1, 1) for sy in (-1, 1)])


# A part in an object's local frame (x = width, y = depth with the front at +y, z up, origin on
# the floor): ("box", centre (3,), half (3,), role) or ("cyl", centre (2,), radius, z0, z1, role).
_LocalPart = tuple


def _lbox(center, half, role: str = "main") -> _LocalPart:
    return ("box", np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64), role)


def _lcyl(center, radius: float, z0: float, z1: float, role: str = "main") -> _LocalPart:
    return ("cyl", np.asarray(center, dtype=np.float64), float(radius), float(z0), float(z1), role)


def _local_extent(parts: list[_LocalPart]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for p in parts:
        if p[0] == "box":
            plo, phi = p[1] - p[2], p[1] + p[2]
        else:
            plo = np.array([p[1][0] - p[2], p[1][1] - p[2], p[3]])
            phi = np.array([p[1][0] + p[2], p[1][1] + p[2], p[4]])
        lo, hi = np.minimum(lo, plo), np.maximum(hi, phi)
    return lo, hi


class _RoomBuilder:
    """Random layout: door, windows and pictures on the walls, then furniture against the walls
    and free-standing groups, each accepted only if its footprint overlaps nothing (3D: footprints
    only collide where their height ranges overlap), lies inside the room and keeps clear of the
    camera path."""

    WALL_GAP = (0.02, 0.06)  # furniture stands a little off the wall

    def __init__(self, seed: int, size_range):
        self.seed = seed
        self.rng = np.random.default_rng([seed, 0])
        rng = self.rng
        self.size = np.array([rng.uniform(*size_range[0]), rng.uniform(*size_range[1]), rng.uniform(*size_range[2])])
        lx, ly = self.size[:2]
        self.path_center = np.array([lx / 2, ly / 2]) + rng.uniform(-0.15, 0.15, 2)
        self.path_radii = np.minimum(np.array([lx, ly]) * rng.uniform(0.18, 0.24, 2), np.array([lx, ly]) / 2 - 1.0)
        ang = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        self.path_pts = self.path_center + self.path_radii * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        self.occupied: list[_Footprint] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 7

    # ------------------------------------------------------------ walls

    def wall_frame(self, wall: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(origin on the floor, tangent, inward normal, length) of wall 0: y=0, 1: x=Lx, 2: y=Ly, 3: x=0."""
        lx, ly = self.size[:2]
        return [
            (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), lx),
            (np.array([lx, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), ly),
            (np.array([0.0, ly]), np.array([1.0, 0.0]), np.array([0.0, -1.0]), lx),
            (np.array([0.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0]), ly),
        ][wall]

    # ------------------------------------------------------------ appearance

    def appearance(self, class_name: str) -> dict[str, dict]:
        """Per role: Part keyword arguments (colour, style, …) for one instance."""
        rng = self.rng
        out = {}
        for role, variants in APPEARANCE[class_name].items():
            var = variants[int(rng.integers(len(variants)))]
            base = np.array(var.palette[int(rng.integers(len(var.palette)))], dtype=np.float64) / 255.0
            color = np.clip(base * (1.0 + rng.normal(0.0, 0.035, 3)) * rng.uniform(0.93, 1.06), 0.0, 1.0)
            out[role] = {"color": color, "style": var.style, "freq": float(rng.uniform(*var.freq)),
                         "pattern_amp": var.pattern_amp, "noise_amp": var.noise_amp}
        return out

    # ------------------------------------------------------------ placement

    def try_place(
        self, kind: str, parts: list[_LocalPart], cx: float, cy: float, yaw: float,
        keepout: list[_Footprint] | None = None, path_clear: float | None = None,
    ) -> SceneObject | None:
        """Place parts (local frame, re-centred on their footprint) at (cx, cy, yaw) if free."""
        lo, hi = _local_extent(parts)
        fp = _Footprint(cx, cy, (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2, yaw, 0.0 if kind != "wallmount" else lo[2],
                        hi[2])
        corners = fp.corners()
        if np.any(corners < -1e-6) or np.any(corners > self.size[:2] + 1e-6):
            return None
        if any(fp.overlaps(o, margin=0.04) for o in self.occupied):
            return None
        if path_clear is None:
            path_clear = 0.55 if hi[2] > 0.95 else 0.35
        if path_clear > 0 and fp.distance_to(self.path_pts) < path_clear:
            return None
        self.occupied.append(fp)
        self.occupied.extend(keepout or [])
        return fp

    def materialise(self, class_name: str, parts: list[_LocalPart], fp: _Footprint) -> SceneObject:
        lo, hi = _local_extent(parts)
        shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
        R = _yaw_matrix(fp.yaw)
        t = np.array([fp.cx, fp.cy, 0.0])
        look = self.appearance(class_name)
        inst = self.next_instance
        self.next_instance += 1
        out = []
        for p in parts:
            role = p[-1]
            if p[0] == "box":
                shape = Box(R @ (p[1] - shift) + t, p[2], fp.yaw)
            else:
                c = R @ np.array([p[1][0] - shift[0], p[1][1] - shift[1], 0.0]) + t
                shape = Cylinder(c[:2], p[2], p[3], p[4])
            out.append(Part(shape, CLASS_ID[class_name], inst, **look[role]))
        obj = SceneObject(class_name, inst, out)
        self.objects.append(obj)
        return obj

    def place_against_wall(self, class_name: str, parts: list[_LocalPart], tries: int = 30,
                           wall: int | None = None, path_clear: float | None = None) -> _Footprint | None:
        lo, hi = _local_extent(parts)
        hx, hy = (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2
        for _ in range(tries):
            w = int(self.rng.integers(4)) if wall is None else wall
            origin, tangent, normal, length = self.wall_frame(w)
            if length < 2 * hx + 0.1:
                continue
            s = self.rng.uniform(hx + 0.05, length - hx - 0.05)
            c = origin + tangent * s + normal * (self.rng.uniform(*self.WALL_GAP) + hy)
            yaw = math.atan2(-normal[0], normal[1])  # local +y (front) faces into the room
            fp = self.try_place(class_name, parts, c[0], c[1], yaw, path_clear=path_clear)
            if fp is not None:
                self.materialise(class_name, parts, fp)
                return fp
        return None

    def place_free(self, class_name: str, parts: list[_LocalPart], tries: int = 30,
                   inside_path: bool = False) -> _Footprint | None:
        lo, hi = _local_extent(parts)
        r = math.hypot((hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2)
        for _ in range(tries):
            if inside_path:
                c = self.path_center + self.rng.uniform(-0.3, 0.3, 2) * self.path_radii
            else:
                c = self.rng.uniform([r, r], self.size[:2] - r)
            yaw = self.rng.choice([0.0, math.pi / 2]) if self.rng.random() < 0.6 else self.rng.uniform(0, math.pi)
            fp = self.try_place(class_name, parts, c[0], c[1], float(yaw))
            if fp is not None:
                self.materialise(class_name, parts, fp)
                return fp
        return None

    def place_wallmount(self, class_name: str, parts: list[_LocalPart], tries: int = 30,
                        keepout_depth: float = 0.0) -> _Footprint | None:
        """Flat items with their back flush with a wall (door, window, picture); the door also
        reserves a keep-out zone in front of it (floor to ceiling)."""
        lo, hi = _local_extent(parts)
        hx, hy = (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2
        for _ in range(tries):
            w = int(self.rng.integers(4))
            origin, tangent, normal, length = self.wall_frame(w)
            if length < 2 * hx + 0.4:
                continue
            s = self.rng.uniform(hx + 0.2, length - hx - 0.2)
            c = origin + tangent * s + normal * hy
            yaw = math.atan2(-normal[0], normal[1])
            keep = []
            if keepout_depth > 0:
                kc = origin + tangent * s + normal * (2 * hy + keepout_depth / 2)
                keep.append(_Footprint(kc[0], kc[1], hx + 0.1, keepout_depth / 2, yaw, 0.0, float(self.size[2])))
            fp = self.try_place("wallmount", parts, c[0], c[1], yaw, keepout=keep, path_clear=0.0)
            if fp is not None:
                self.materialise(class_name, parts, fp)
                return fp
        return None

    def place_chairs_around(self, table: _Footprint, rng: np.random.Generator, n: int, round_table: bool) -> None:
        """Up to n chairs facing the table: evenly around a round one, on alternating sides of a
        rectangular one; chairs that do not fit are skipped."""
        a1, a2 = table.axes()
        centre = np.array([table.cx, table.cy])
        for k in range(n):
            parts = _chair(rng)
            lo, hi = _local_extent(parts)
            hy = (hi[1] - lo[1]) / 2
            if round_table:
                ang = table.yaw + 2 * math.pi * k / n + rng.uniform(-0.2, 0.2)
                direction = np.array([math.cos(ang), math.sin(ang)])
                c = centre + direction * (table.hx + hy + 0.08)
            else:
                direction = (a2, -a2, a1, -a1)[k % 4]
                half_depth, along, half_len = ((table.hy, a1, table.hx), (table.hx, a2, table.hy))[(k % 4) // 2]
                c = (centre + direction * (half_depth + hy + rng.uniform(0.06, 0.15))
                     + along * rng.uniform(-0.25, 0.25) * half_len)
            # Chair front (local +y, world (-sin yaw, cos yaw)) faces the table: -direction.
            yaw = math.atan2(direction[0], -direction[1]) + rng.uniform(-0.15, 0.15)
            fp = self.try_place("chair", parts, c[0], c[1], yaw)
            if fp is not None:
                self.materialise("chair", parts, fp)

    # Relative frequency of each furniture kind, and placement order (largest first: they are the
    # hardest to fit). Tables come with 2-4 chairs and desks with one.
    KIND_WEIGHTS = {"bed": 1.0, "sofa": 1.0, "bathtub": 0.6, "table": 1.2, "desk": 1.2, "bookshelf": 1.6,
                    "refrigerator": 0.6, "cabinet": 2.4, "toilet": 0.8, "sink": 0.8, "lamp": 0.9, "chair": 1.2}
    KIND_MAX = {"bed": 2, "sofa": 2, "bathtub": 1, "table": 2, "desk": 3, "refrigerator": 1, "toilet": 1, "sink": 2,
                "lamp": 2}

    def place_kind(self, kind: str) -> bool:
        rng = self.rng
        against_wall = {"bed": _bed, "sofa": _sofa, "bathtub": _bathtub, "bookshelf": _bookshelf,
                        "cabinet": _cabinet, "desk": _desk, "refrigerator": _refrigerator, "toilet": _toilet,
                        "sink": _sink}
        if kind in against_wall and not (kind == "sofa" and rng.random() < 0.3):
            fp = self.place_against_wall(kind, against_wall[kind](rng))
            if kind == "desk" and fp is not None:
                parts = _chair(rng)
                c = np.array([fp.cx, fp.cy]) + fp.axes()[1] * (fp.hy + 0.3)
                cfp = self.try_place("chair", parts, c[0], c[1], fp.yaw + math.pi + rng.uniform(-0.3, 0.3))
                if cfp is not None:
                    self.materialise("chair", parts, cfp)
            return fp is not None
        if kind == "table":
            round_table = rng.random() < 0.3
            parts = _round_table(rng) if round_table else _table(rng)
            fp = self.place_free("table", parts, inside_path=rng.random() < 0.5)
            if fp is not None:
                self.place_chairs_around(fp, rng, int(rng.integers(2, 5)), round_table)
            return fp is not None
        builder = {"lamp": _lamp, "chair": _chair, "sofa": _sofa}[kind]
        return self.place_free(kind, builder(rng)) is not None

    def build(self) -> SyntheticRoom:
        rng = self.rng
        structure = {name: self.appearance(name)["main"] for name in STRUCTURE_CLASSES}
        self.place_wallmount("door", _door(rng), keepout_depth=0.9)
        for _ in range(int(rng.integers(1, 4))):
            self.place_wallmount("window", _window(rng, self.size[2]))
        for _ in range(int(rng.integers(0, 4))):
            self.place_wallmount("picture", _picture(rng, self.size[2]))
        kinds = list(self.KIND_WEIGHTS)
        weights = np.array([self.KIND_WEIGHTS[k] for k in kinds])
        area = float(self.size[0] * self.size[1])
        n_target = int(rng.integers(6, 10) + area / 6)
        drawn = [kinds[i] for i in rng.choice(len(kinds), size=2 * n_target, p=weights / weights.sum())]
        drawn.sort(key=kinds.index)  # stable: largest kinds first
        placed = 0
        for kind in drawn:
            if placed >= n_target:
                break
            if sum(o.class_name == kind for o in self.objects) >= self.KIND_MAX.get(kind, n_target):
                continue
            placed += self.place_kind(kind)
        return SyntheticRoom(self.size, self.objects, seed=self.seed, path_center=self.path_center,
                             path_radii=self.path_radii, structure_looks=structure)


# ------------------------------------------------------------------ object builders (local frame)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _chair(rng) -> list[_LocalPart]:
    w, d, sh, st = _u(rng, 0.42, 0.5), _u(rng, 0.42, 0.5), _u(rng, 0.42, 0.48), _u(rng, 0.035, 0.06)
    leg, bh, bt = _u(rng, 0.025, 0.04), _u(rng, 0.38, 0.5), _u(rng, 0.03, 0.05)
    parts = [_lbox((0, 0, sh - st / 2), (w / 2, d / 2, st / 2))]
    lh = (sh - st) / 2
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_lbox((sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), lh), (leg / 2, leg / 2, lh), "frame"))
    parts.append(_lbox((0, -d / 2 + bt / 2, sh + bh / 2), (w / 2, bt / 2, bh / 2)))
    return parts


def _table(rng) -> list[_LocalPart]:
    w, d, h, tt = _u(rng, 0.8, 1.8), _u(rng, 0.7, 1.0), _u(rng, 0.72, 0.78), _u(rng, 0.03, 0.05)
    leg, inset = _u(rng, 0.05, 0.07), _u(rng, 0.02, 0.08)
    parts = [_lbox((0, 0, h - tt / 2), (w / 2, d / 2, tt / 2))]
    lh = (h - tt) / 2
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_lbox((sx * (w / 2 - inset - leg / 2), sy * (d / 2 - inset - leg / 2), lh),
                               (leg / 2, leg / 2, lh), "frame"))
    return parts


def _round_table(rng) -> list[_LocalPart]:
    r, h, tt = _u(rng, 0.45, 0.6), _u(rng, 0.72, 0.78), _u(rng, 0.03, 0.05)
    return [_lcyl((0, 0), r, h - tt, h), _lcyl((0, 0), _u(rng, 0.04, 0.06), 0.03, h - tt, "frame"),
            _lcyl((0, 0), _u(rng, 0.22, 0.3), 0.0, 0.03, "frame")]


def _desk(rng) -> list[_LocalPart]:
    w, d, h, tt = _u(rng, 1.0, 1.6), _u(rng, 0.6, 0.8), _u(rng, 0.72, 0.76), _u(rng, 0.025, 0.04)
    pw, lh = _u(rng, 0.38, 0.45), h - tt
    side = 1 if rng.random() < 0.5 else -1
    px = side * (w / 2 - pw / 2)
    parts = [_lbox((0, 0, h - tt / 2), (w / 2, d / 2, tt / 2)),
             _lbox((px, 0.0, lh / 2), (pw / 2, d / 2 - 0.02, lh / 2)),
             _lbox((-side * (w / 2 - 0.015), 0.0, lh / 2), (0.015, d / 2 - 0.02, lh / 2)),
             _lbox((0.0, -d / 2 + 0.04, h - tt - 0.15), (w / 2 - 0.03, 0.01, 0.15))]
    n_drawers = int(rng.integers(2, 4))
    for k in range(n_drawers):
        z = lh * (k + 0.5) / n_drawers
        parts.append(_lbox((px, d / 2 - 0.02 + 0.012, z), (0.06, 0.012, 0.01), "handle"))
    return parts


def _sofa(rng) -> list[_LocalPart]:
    w, d, sh = _u(rng, 1.6, 2.4), _u(rng, 0.8, 1.0), _u(rng, 0.4, 0.46)
    arm, ah, bt, bh = _u(rng, 0.12, 0.2), _u(rng, 0.55, 0.65), _u(rng, 0.18, 0.25), _u(rng, 0.8, 0.95)
    return [_lbox((0, bt / 2, sh / 2), (w / 2 - arm, d / 2 - bt / 2, sh / 2)),
            _lbox((0, -d / 2 + bt / 2, bh / 2), (w / 2 - arm, bt / 2, bh / 2)),
            _lbox((-w / 2 + arm / 2, 0, ah / 2), (arm / 2, d / 2, ah / 2)),
            _lbox((w / 2 - arm / 2, 0, ah / 2), (arm / 2, d / 2, ah / 2))]


def _bed(rng) -> list[_LocalPart]:
    w, length, fh, mh = _u(rng, 0.9, 1.8), _u(rng, 1.95, 2.1), _u(rng, 0.25, 0.35), _u(rng, 0.18, 0.25)
    hb_t, hb_h = _u(rng, 0.05, 0.08), _u(rng, 0.9, 1.2)
    y0 = -length / 2 + hb_t  # foot of the headboard
    parts = [_lbox((0, hb_t / 2, fh / 2), (w / 2, (length - hb_t) / 2, fh / 2)),
             _lbox((0, -length / 2 + hb_t / 2, hb_h / 2), (w / 2, hb_t / 2, hb_h / 2)),
             _lbox((0, hb_t / 2, fh + mh / 2), (w / 2 - 0.03, (length - hb_t) / 2 - 0.03, mh / 2), "bedding")]
    n_pillows = 1 if w < 1.2 else 2
    pw = (w - 0.12) / n_pillows - 0.04
    for k in range(n_pillows):
        x = -w / 2 + 0.06 + (k + 0.5) * (w - 0.12) / n_pillows
        parts.append(_lbox((x, y0 + 0.06 + 0.2, fh + mh + 0.06), (pw / 2, 0.2, 0.06), "pillow"))
    return parts


def _cabinet(rng) -> list[_LocalPart]:
    w, d = _u(rng, 0.5, 1.2), _u(rng, 0.4, 0.6)
    h = _u(rng, 0.7, 0.95) if rng.random() < 0.5 else _u(rng, 1.6, 2.1)
    parts = [_lbox((0, 0, h / 2), (w / 2, d / 2, h / 2)), _lbox((0, 0, h + 0.01), (w / 2 + 0.01, d / 2 + 0.01, 0.01))]
    n_doors = 1 if w < 0.7 else 2
    for k in range(n_doors):
        x = 0.0 if n_doors == 1 else (-0.05 if k == 0 else 0.05)
        parts.append(_lbox((x, d / 2 + 0.012, h * 0.6), (0.01, 0.012, 0.07), "handle"))
    return parts


def _bookshelf(rng) -> list[_LocalPart]:
    w, d, h, b = _u(rng, 0.6, 1.2), _u(rng, 0.25, 0.4), _u(rng, 1.5, 2.1), _u(rng, 0.02, 0.03)
    n_shelves = int(rng.integers(3, 6))
    plinth = 0.08
    parts = [_lbox((-w / 2 + b / 2, 0, h / 2), (b / 2, d / 2, h / 2)),
             _lbox((w / 2 - b / 2, 0, h / 2), (b / 2, d / 2, h / 2)),
             _lbox((0, 0, h - b / 2), (w / 2 - b, d / 2, b / 2)),
             _lbox((0, 0, plinth / 2), (w / 2 - b, d / 2, plinth / 2)),
             _lbox((0, -d / 2 + 0.005, h / 2), (w / 2 - b, 0.005, h / 2))]
    levels = np.linspace(plinth, h - b, n_shelves + 1)
    for z in levels[1:-1]:
        parts.append(_lbox((0, 0, z), (w / 2 - b, d / 2, b / 2)))
    inner = w - 2 * b
    for k in range(n_shelves):
        z0 = levels[k] + (b / 2 if k > 0 else 0.0)
        z1 = levels[k + 1] - b / 2
        x = -inner / 2 + _u(rng, 0.0, 0.1) * inner
        while True:  # blocks of books, left to right
            bw = _u(rng, 0.15, 0.4) * inner
            if x + bw > inner / 2 - 0.01:
                break
            bh = _u(rng, 0.55, 0.85) * (z1 - z0)
            parts.append(_lbox((x + bw / 2, -d / 2 + 0.01 + 0.36 * d, z0 + bh / 2), (bw / 2, 0.35 * d, bh / 2),
                               "books"))
            x += bw + _u(rng, 0.02, 0.2) * inner
    return parts


def _refrigerator(rng) -> list[_LocalPart]:
    w, d, h = _u(rng, 0.6, 0.8), _u(rng, 0.6, 0.7), _u(rng, 1.6, 1.9)
    split = h * _u(rng, 0.55, 0.7)
    x = w / 2 - 0.06
    return [_lbox((0, 0, h / 2), (w / 2, d / 2, h / 2)),
            _lbox((x, d / 2 + 0.02, split - 0.3), (0.012, 0.02, 0.2), "handle"),
            _lbox((x, d / 2 + 0.02, split + 0.15), (0.012, 0.02, 0.1), "handle")]


def _toilet(rng) -> list[_LocalPart]:
    r, bh = _u(rng, 0.17, 0.21), _u(rng, 0.38, 0.42)
    tw, td, top = _u(rng, 0.36, 0.46), _u(rng, 0.16, 0.2), _u(rng, 0.75, 0.85)
    yb = -0.35 + td + r - 0.04
    return [_lbox((0, -0.35 + td / 2, (top + bh - 0.05) / 2), (tw / 2, td / 2, (top - bh + 0.05) / 2)),
            _lbox((0, -0.35 + td / 2 + 0.03, (bh - 0.05) / 2), (0.1, 0.08, (bh - 0.05) / 2)),
            _lcyl((0, yb), r, 0.0, bh), _lcyl((0, yb), r + 0.01, bh, bh + 0.03)]


def _sink(rng) -> list[_LocalPart]:
    w, d, ph, bh = _u(rng, 0.5, 0.65), _u(rng, 0.4, 0.5), _u(rng, 0.65, 0.72), _u(rng, 0.15, 0.2)
    return [_lcyl((0, -d / 2 + 0.15), _u(rng, 0.07, 0.1), 0.0, ph),
            _lbox((0, 0, ph + bh / 2), (w / 2, d / 2, bh / 2)),
            _lcyl((0, -d / 2 + 0.06), 0.015, ph + bh, ph + bh + 0.15, "handle"),
            _lbox((0, -d / 2 + 0.1, ph + bh + 0.14), (0.012, 0.05, 0.01), "handle")]


def _bathtub(rng) -> list[_LocalPart]:
    w, d, h, e = _u(rng, 1.5, 1.8), _u(rng, 0.7, 0.8), _u(rng, 0.5, 0.6), _u(rng, 0.06, 0.09)
    return [_lbox((0, 0, 0.05), (w / 2 - e, d / 2 - e, 0.05)),
            _lbox((0, d / 2 - e / 2, h / 2), (w / 2, e / 2, h / 2)),
            _lbox((0, -d / 2 + e / 2, h / 2), (w / 2, e / 2, h / 2)),
            _lbox((-w / 2 + e / 2, 0, h / 2), (e / 2, d / 2 - e, h / 2)),
            _lbox((w / 2 - e / 2, 0, h / 2), (e / 2, d / 2 - e, h / 2)),
            _lcyl((w / 2 - e - 0.08, -d / 2 + e / 2), 0.02, h, h + 0.12, "handle")]


def _door(rng) -> list[_LocalPart]:
    w, h, t = _u(rng, 0.8, 1.0), _u(rng, 2.0, 2.1), 0.04
    c = 0.06  # casing width
    return [_lbox((0, t / 2, h / 2), (w / 2, t / 2, h / 2)),
            _lbox((-w / 2 - c / 2, 0.025, (h + c) / 2), (c / 2, 0.025, (h + c) / 2), "frame"),
            _lbox((w / 2 + c / 2, 0.025, (h + c) / 2), (c / 2, 0.025, (h + c) / 2), "frame"),
            _lbox((0, 0.025, h + c / 2), (w / 2, 0.025, c / 2), "frame"),
            _lbox((w / 2 - 0.09, t + 0.02, 1.0), (0.06, 0.02, 0.012), "handle")]


def _window(rng, room_h: float) -> list[_LocalPart]:
    w, h, sill = _u(rng, 0.8, 1.6), _u(rng, 1.0, 1.4), _u(rng, 0.8, 1.0)
    h = min(h, room_h - sill - 0.25)
    fb, fd = 0.06, 0.06  # frame bar width and depth
    parts = [_lbox((0, fd / 2, sill + fb / 2), (w / 2, fd / 2, fb / 2), "frame"),
             _lbox((0, fd / 2, sill + h - fb / 2), (w / 2, fd / 2, fb / 2), "frame"),
             _lbox((-w / 2 + fb / 2, fd / 2, sill + h / 2), (fb / 2, fd / 2, h / 2 - fb), "frame"),
             _lbox((w / 2 - fb / 2, fd / 2, sill + h / 2), (fb / 2, fd / 2, h / 2 - fb), "frame"),
             _lbox((0, 0.0075, sill + h / 2), (w / 2 - fb, 0.0075, h / 2 - fb), "glass"),
             _lbox((0, 0.06, sill - 0.015), (w / 2 + 0.05, 0.06, 0.015), "frame")]
    if w > 1.1:
        parts.append(_lbox((0, fd / 4, sill + h / 2), (0.02, fd / 4, h / 2 - fb), "frame"))
    return parts


def _picture(rng, room_h: float) -> list[_LocalPart]:
    w, h, t = _u(rng, 0.4, 1.0), _u(rng, 0.3, 0.8), _u(rng, 0.02, 0.03)
    zc = min(_u(rng, 1.3, 1.7), room_h - h / 2 - 0.15)
    b = _u(rng, 0.02, 0.05)
    return [_lbox((0, t / 2, zc), (w / 2, t / 2, h / 2), "frame"),
            _lbox((0, t / 2 + 0.003, zc), (w / 2 - b, t / 2 + 0.003, h / 2 - b), "art")]


def _lamp(rng) -> list[_LocalPart]:
    ph, sr = _u(rng, 1.3, 1.6), _u(rng, 0.15, 0.22)
    return [_lcyl((0, 0), _u(rng, 0.12, 0.16), 0.0, 0.03, "frame"),
            _lcyl((0, 0), _u(rng, 0.012, 0.018), 0.03, ph, "frame"),
            _lcyl((0, 0), sr, ph - 0.05, ph + _u(rng, 0.22, 0.3), "shade")]


# ================================================================== writing scenes


_OUTPUTS = ("color", "depth", "pose", "label", "intrinsic", INSTANCE_DIR, "scene.ply", META_FILE)


def generate_scene(
    out_dir: str | os.PathLike,
    seed: int,
    n_frames: int = 30,
    width: int = 640,
    height: int = 480,
    density: float = DEFAULT_DENSITY,
    color_format: str = "png",
    overwrite: bool = False,
    cloud: str = "observed",
) -> Path:
    """Write the room of `seed` as a canonical scene folder (see `pgov3d_core.data.scene`):
    colour, depth (mm), pose, label (class id + 1) per frame, intrinsics, `scene.ply` (the full
    labelled cloud at `density` points/m², with an extra per-point `instance` property),
    `instance/<id>.png` (uint16 instance ids) and meta.yaml (written last; class_names =
    CLASS_NAMES, extra `instance_classes` {instance id: class name} and `synthetic` facts).

    `cloud`: "observed" (default) keeps the surface points that at least one of the scene's frames
    sees (`SyntheticRoom.observed_mask`), as a real scan's cloud is reconstructed from its frames
    and holds only what they observed; "all" keeps every visible-from-inside surface point
    (including, e.g., the ceiling above the camera's pitch range, which no frame shows).

    Refuses to write over existing outputs unless `overwrite` (which first removes exactly the
    files and folders this function writes)."""
    root = Path(out_dir)
    existing = [name for name in _OUTPUTS if (root / name).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(f"{root}: already holds scene outputs ({', '.join(existing)}); use overwrite=True")
        for name in existing:
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    if cloud not in ("observed", "all"):
        raise ValueError(f"cloud must be 'observed' or 'all', got {cloud!r}")
    room = SyntheticRoom.random(seed)
    samples = room.sample_points(density)
    n_surface = len(samples.xyz)
    if cloud == "observed":
        keep = room.observed_mask(samples.xyz, default_intrinsics(width, height), room.trajectory(n_frames),
                                  width, height)
        samples = SurfaceSamples(samples.xyz[keep], samples.normals[keep], samples.rgb[keep],
                                 samples.labels[keep], samples.instances[keep])
    write_ply_cloud(root / "scene.ply", samples.cloud(), extra={"instance": samples.instances.astype(np.int32)})

    def frames() -> Iterator[Frame]:
        for frame, inst in room.render_frames(n_frames, width, height):
            path = root / INSTANCE_DIR / f"{frame.frame_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(inst.astype(np.uint16)).save(path)
            yield frame

    summary = room.summary()
    summary.update({"generator": f"pgov3d_core.data.synthetic v{GENERATOR_VERSION}", "n_frames": n_frames,
                    "width": width, "height": height, "cloud_density": float(density),
                    "cloud": cloud, "cloud_points": len(samples.xyz), "surface_points": n_surface})
    extra = {"instance_dir": INSTANCE_DIR, "instance_classes": room.instance_classes, "synthetic": summary}
    write_scene(root, frames(), class_names=list(CLASS_NAMES), depth_scale=DEPTH_SCALE, color_format=color_format,
                source="synthetic", extra_meta=extra)
    return root


def scene_is_complete(path: str | os.PathLike) -> bool:
    """A scene folder is complete when its meta.yaml exists and it opens with `Scene`."""
    path = Path(path)
    if not (path / META_FILE).is_file():
        return False
    try:
        Scene(path)
    except SceneError:
        return False
    return True


def generate_dataset(
    root: str | os.PathLike,
    seeds: Iterable[int],
    on_scene: Callable[[Path, bool], None] | None = None,
    **scene_kwargs,
) -> list[Path]:
    """One scene per seed at `root/scene_XXXX` (XXXX = seed, zero-padded). Resumable: complete
    scenes are skipped; each scene is written into a hidden temporary folder under `root` and
    renamed into place at the end, so an interrupted scene never looks complete (its leftovers
    are removed on the next run; do not run two writers on one root). `on_scene(path,
    generated)` is called per seed. `scene_kwargs` go to `generate_scene`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:
        seed = int(seed)
        name = f"scene_{seed:04d}"
        dest = root / name
        generated = False
        if not scene_is_complete(dest):
            for stale in sorted(root.glob(f".{name}.*.partial")):
                shutil.rmtree(stale, ignore_errors=True)
            if dest.exists():
                log.warning("%s: incomplete scene folder, regenerating it", dest)
                shutil.rmtree(dest)
            atomic_write_dir(dest, lambda tmp, seed=seed: generate_scene(tmp, seed, **scene_kwargs))
            generated = True
        if on_scene is not None:
            on_scene(dest, generated)
        out.append(dest)
    return out


# ================================================================== CLI


def _summary_line(path: Path) -> str:
    scene = Scene(path)
    syn = scene.meta.extra.get("synthetic", {})
    size = "x".join(f"{v:.2f}" for v in syn.get("room_size", []))
    first = scene[0]
    return (f"{path}: {len(scene)} frames {first.width}x{first.height}, room {size} m, "
            f"{syn.get('n_objects', '?')} objects ({len(syn.get('object_counts', {}))} object classes), "
            f"{syn.get('cloud_points', '?')} cloud points")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgov3d_core.data.synthetic",
        description="Write deterministic synthetic labelled rooms as canonical scene folders "
                    "(same seed => byte-identical files).",
    )
    parser.add_argument("--out", required=True, help="output folder (the scene, or the dataset root with --scenes)")
    parser.add_argument("--seed", type=int, default=0, help="room seed (first seed with --scenes; default 0)")
    parser.add_argument("--frames", type=int, default=30, help="frames per scene along the camera path (default 30)")
    parser.add_argument("--width", type=int, default=640, help="image width in pixels (default 640)")
    parser.add_argument("--height", type=int, default=480, help="image height in pixels (default 480)")
    parser.add_argument("--density", type=float, default=DEFAULT_DENSITY,
                        help=f"scene.ply points per square metre of surface (default {DEFAULT_DENSITY:g})")
    parser.add_argument("--color-format", choices=("png", "jpg"), default="png",
                        help="colour image format (default png: lossless and byte-reproducible)")
    parser.add_argument("--scenes", type=int, default=None,
                        help="write a dataset of this many scenes (seeds SEED…SEED+N-1) as OUT/scene_XXXX, "
                             "skipping complete ones")
    parser.add_argument("--overwrite", action="store_true",
                        help="single scene: replace existing scene outputs in OUT")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.width < 2 or args.height < 2 or args.density <= 0:
        parser.error("--frames must be >= 1, --width/--height >= 2 and --density > 0")
    kwargs = {"n_frames": args.frames, "width": args.width, "height": args.height, "density": args.density,
              "color_format": args.color_format}
    if args.scenes is not None:
        if args.scenes < 1:
            parser.error("--scenes must be >= 1")

        def report(path: Path, generated: bool) -> None:
            print(("wrote " if generated else "kept (complete) ") + _summary_line(path), flush=True)

        paths = generate_dataset(args.out, range(args.seed, args.seed + args.scenes), on_scene=report, **kwargs)
        print(f"dataset {args.out}: {len(paths)} scenes")
        return 0
    try:
        path = generate_scene(args.out, args.seed, overwrite=args.overwrite, **kwargs)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + _summary_line(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
