"""Primitives and exact ray intersection: oriented boxes (rotated about the vertical axis),
vertical cylinders and the six inside faces of the room box; `Part` (a primitive with its label
and appearance) and `SceneObject` (one labelled instance made of parts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pgov3d_core.data.synthetic.classes import CLASS_ID
from pgov3d_core.data.synthetic.textures import PLAIN

_EPS = 1e-9
# The 12 edges of the 8 corners that Box/Cylinder.corners list (index = 4 * ix + 2 * iy + iz).
CORNER_EDGES = np.array([(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit])


def yaw_matrix(yaw: float) -> np.ndarray:
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
        self.rotation = yaw_matrix(self.yaw)  # local → world

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
