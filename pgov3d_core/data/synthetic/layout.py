"""Random room layout: the room size and camera path, then door, windows and pictures on the
walls, furniture against the walls and free-standing groups (tables with chairs), each accepted
only where its footprint is free, inside the room and clear of the camera path."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pgov3d_core.data.synthetic import furniture
from pgov3d_core.data.synthetic.classes import CLASS_ID, STRUCTURE_CLASSES
from pgov3d_core.data.synthetic.furniture import LocalPart, local_extent
from pgov3d_core.data.synthetic.primitives import Box, Cylinder, Part, SceneObject, yaw_matrix
from pgov3d_core.data.synthetic.renderer import SyntheticRoom
from pgov3d_core.data.synthetic.textures import APPEARANCE


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


class RoomBuilder:
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
        self, kind: str, parts: list[LocalPart], cx: float, cy: float, yaw: float,
        keepout: list[_Footprint] | None = None, path_clear: float | None = None,
    ) -> SceneObject | None:
        """Place parts (local frame, re-centred on their footprint) at (cx, cy, yaw) if free."""
        lo, hi = local_extent(parts)
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

    def materialise(self, class_name: str, parts: list[LocalPart], fp: _Footprint) -> SceneObject:
        lo, hi = local_extent(parts)
        shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
        R = yaw_matrix(fp.yaw)
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

    def place_against_wall(self, class_name: str, parts: list[LocalPart], tries: int = 30,
                           wall: int | None = None, path_clear: float | None = None) -> _Footprint | None:
        lo, hi = local_extent(parts)
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

    def place_free(self, class_name: str, parts: list[LocalPart], tries: int = 30,
                   inside_path: bool = False) -> _Footprint | None:
        lo, hi = local_extent(parts)
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

    def place_wallmount(self, class_name: str, parts: list[LocalPart], tries: int = 30,
                        keepout_depth: float = 0.0) -> _Footprint | None:
        """Flat items with their back flush with a wall (door, window, picture); the door also
        reserves a keep-out zone in front of it (floor to ceiling)."""
        lo, hi = local_extent(parts)
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
            parts = furniture.chair(rng)
            lo, hi = local_extent(parts)
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
        against_wall = {kind: getattr(furniture, kind) for kind in ("bed", "sofa", "bathtub", "bookshelf", "cabinet",
                                                                    "desk", "refrigerator", "toilet", "sink")}
        if kind in against_wall and not (kind == "sofa" and rng.random() < 0.3):
            fp = self.place_against_wall(kind, against_wall[kind](rng))
            if kind == "desk" and fp is not None:
                parts = furniture.chair(rng)
                c = np.array([fp.cx, fp.cy]) + fp.axes()[1] * (fp.hy + 0.3)
                cfp = self.try_place("chair", parts, c[0], c[1], fp.yaw + math.pi + rng.uniform(-0.3, 0.3))
                if cfp is not None:
                    self.materialise("chair", parts, cfp)
            return fp is not None
        if kind == "table":
            round_table = rng.random() < 0.3
            parts = furniture.round_table(rng) if round_table else furniture.table(rng)
            fp = self.place_free("table", parts, inside_path=rng.random() < 0.5)
            if fp is not None:
                self.place_chairs_around(fp, rng, int(rng.integers(2, 5)), round_table)
            return fp is not None
        builder = {"lamp": furniture.lamp, "chair": furniture.chair, "sofa": furniture.sofa}[kind]
        return self.place_free(kind, builder(rng)) is not None

    def build(self) -> SyntheticRoom:
        rng = self.rng
        structure = {name: self.appearance(name)["main"] for name in STRUCTURE_CLASSES}
        self.place_wallmount("door", furniture.door(rng), keepout_depth=0.9)
        for _ in range(int(rng.integers(1, 4))):
            self.place_wallmount("window", furniture.window(rng, self.size[2]))
        for _ in range(int(rng.integers(0, 4))):
            self.place_wallmount("picture", furniture.picture(rng, self.size[2]))
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
