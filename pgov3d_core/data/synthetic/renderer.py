"""`SyntheticRoom`: the furnished box room, its camera path, the renderer (exact nearest
ray/primitive hit per pixel, so depth, labels and the full-scene cloud describe one geometry to
floating-point precision) and the surface cloud; the camera helpers (`default_intrinsics`,
`look_pose`, `pixel_rays`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import PointCloud
from pgov3d_core.data.synthetic import textures
from pgov3d_core.data.synthetic.classes import CLASS_ID, CLASS_NAMES
from pgov3d_core.data.synthetic.primitives import CORNER_EDGES, Part, RoomFace, SceneObject, intersect_room
from pgov3d_core.data.synthetic.textures import mix64
from pgov3d_core.geometry import check_intrinsics, check_rigid

DEFAULT_DENSITY = 2500.0  # cloud points per m²: one point per 2 cm x 2 cm cell (2 cm voxels)
ROOM_SIZE_RANGE = ((4.0, 8.0), (4.0, 8.0), (2.5, 3.0))
_NEAR = 0.02  # metres: no surface is ever this close to the camera (used for culling only)


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
        self._salt = mix64(np.uint64(self.seed & 0xFFFFFFFF) * np.uint64(1 << 32)
                            + np.arange(len(parts), dtype=np.uint64))
        self._shell_part = np.array([i for i, p in enumerate(parts) if isinstance(p.shape, RoomFace)], dtype=np.int64)
        self._solid = [i for i, p in enumerate(parts) if not isinstance(p.shape, RoomFace)]
        self._bounds = {i: parts[i].shape.bounds() for i in self._solid}

    @classmethod
    def random(cls, seed: int, size_range=ROOM_SIZE_RANGE) -> SyntheticRoom:
        """A random furnished room, a pure function of `seed` (`layout.RoomBuilder`)."""
        from pgov3d_core.data.synthetic.layout import RoomBuilder  # the layout builds rooms: imported late

        return RoomBuilder(int(seed), size_range).build()

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
                a, b = CORNER_EDGES[:, 0], CORNER_EDGES[:, 1]
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
    # ---------------------------------------------------------------- appearance

    def shade(self, points: np.ndarray, normals: np.ndarray, part_idx: np.ndarray) -> np.ndarray:
        """Colour (N, 3) uint8 of surface points of the given parts with the given normals (facing
        the viewer): `textures.shade` with the parts' appearance."""
        return textures.shade(points, normals, self._color[part_idx], self._style[part_idx], self._salt[part_idx],
                              self._freq[part_idx], self._pamp[part_idx], self._namp[part_idx],
                              self._grain[part_idx], self._grain2[part_idx])

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
