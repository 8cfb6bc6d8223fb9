"""A consumer RGB-D sensor's errors on rendered frames (`SensorNoise`), so that frames differ from
the scan cloud the way a real camera's do (the paper's §3.2: partial clouds carry "imprecise depth
measurements", which the reconstructed scene does not).

Rendering is exact: every pixel's depth is its ray's first hit and its colour is the surface's. A
structured-light / time-of-flight camera (Kinect, RealSense, Azure Kinect) gets, per frame:
- axial depth noise that grows with distance and at grazing incidence — the model of Nguyen, Izadi
  and Lovell (3DIMPVT 2012, fitted to a Kinect): sigma_z = 0.0012 + 0.0019 (z - 0.4)^2 +
  0.0001 / sqrt(z) * theta^2 / (pi/2 - theta)^2 metres, theta the incidence angle;
- no depth where the surface is seen nearly edge-on (the projected pattern or the returned light
  is lost): dropped with a probability rising from 0 at 70 deg to 1 at 85 deg;
- "flying pixels" on depth edges: a pixel that straddles a foreground and a background surface
  returns a depth in between (or none); the pixel keeps its label, as a 2D segmenter labels it;
- auto-exposure and white balance that change from frame to frame, and pixel noise in colour.
The scan cloud (scene.ply) is a fused reconstruction and keeps the exact surface, as ScanNet's mesh
averages many frames. Hand-written: no reachable package simulates depth-sensor errors on images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SensorNoise:
    """Per-frame sensor errors; `apply` is deterministic in (its seed, the frame index)."""

    seed: int = 0
    depth_noise: bool = True            # Nguyen et al. axial noise
    grazing_dropout: tuple[float, float] = (70.0, 85.0)   # incidence (deg): drop probability 0 -> 1
    edge_jump: float = 0.05             # relative depth jump between neighbours that makes a depth edge
    flying_pixels: float = 0.5          # fraction of edge pixels given an in-between depth ...
    edge_dropout: float = 0.3           # ... and of the rest given none
    exposure: float = 0.12              # per-frame gain in [1 - e, 1 + e]
    white_balance: float = 0.04         # per-frame, per-channel gain in [1 - w, 1 + w]
    color_noise: float = 2.0            # pixel noise, standard deviation in 0-255 units

    def apply(self, depth: np.ndarray, color: np.ndarray, K: np.ndarray, frame_index: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """(noisy depth (H, W) float32 metres, 0 = no depth; noisy colour (H, W, 3) uint8) of one
        exact rendered frame (depth in metres, colour uint8, pinhole K)."""
        rng = np.random.default_rng([int(self.seed), int(frame_index), 0x5E5])
        depth = np.asarray(depth, dtype=np.float64)
        valid = np.isfinite(depth) & (depth > 0)
        z = np.where(valid, depth, 0.0)
        out = z.copy()
        theta = _incidence(z, valid, K)
        if self.depth_noise:
            zc = np.maximum(z, 0.4)
            th = np.minimum(theta, math.radians(89.0))
            sigma = 0.0012 + 0.0019 * (zc - 0.4) ** 2 + 0.0001 / np.sqrt(zc) * th ** 2 / (math.pi / 2 - th) ** 2
            out = out + rng.standard_normal(z.shape) * sigma
        lo, hi = (math.radians(a) for a in self.grazing_dropout)
        p_drop = np.clip((theta - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
        drop = rng.random(z.shape) < p_drop
        # Depth edges: the pixel's largest relative depth step to a 4-neighbour; the nearer pixel of
        # a step is the foreground, whose footprint also covers some background.
        far, jump = _edge_background(z, valid)
        edge = valid & (jump > self.edge_jump * z)
        u = rng.random(z.shape)
        flying = edge & (u < self.flying_pixels)
        out = np.where(flying, z + rng.random(z.shape) * (far - z), out)
        drop |= edge & ~flying & (u < self.flying_pixels + (1 - self.flying_pixels) * self.edge_dropout)
        out = np.where(valid & ~drop & (out > 0), out, 0.0).astype(np.float32)

        gain = (1.0 + rng.uniform(-self.exposure, self.exposure)) * (
            1.0 + rng.uniform(-self.white_balance, self.white_balance, size=3))
        rgb = np.asarray(color, dtype=np.float64) * gain + rng.standard_normal(np.shape(color)) * self.color_noise
        return out, np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _neighbour(a: np.ndarray, valid: np.ndarray, axis: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(each pixel's neighbour `step` (+1 / -1) pixels back along `axis`: a[i - step], whether that
    neighbour exists and is valid); np.roll's wrap-around is masked out."""
    nb_valid = np.roll(valid, step, axis=axis)
    edge = [slice(None)] * 2
    edge[axis] = 0 if step == 1 else -1
    nb_valid[tuple(edge)] = False
    return np.roll(a, step, axis=axis), nb_valid


def _incidence(z: np.ndarray, valid: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Angle (rad) between each pixel's viewing ray and its surface normal, the normal from the
    cross product of the differences to its neighbours along u and v (per axis the one-sided
    difference with the smaller depth step, so a pixel beside a depth edge takes its own surface's
    slope; 0 where a neighbour is missing)."""
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    p = ray * z[..., None]

    def one_sided(axis: int) -> tuple[np.ndarray, np.ndarray]:
        after, ok_after = _neighbour(p, valid, axis, -1)
        before, ok_before = _neighbour(p, valid, axis, 1)
        fwd, bwd = after - p, p - before
        ok_f, ok_b = valid & ok_after, valid & ok_before
        use_f = ok_f & (~ok_b | (np.abs(fwd[..., 2]) <= np.abs(bwd[..., 2])))
        return np.where(use_f[..., None], fwd, bwd), ok_f | ok_b

    du, ok_u = one_sided(1)
    dv, ok_v = one_sided(0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1)
    cos = np.abs(np.einsum("hwc,hwc->hw", n, ray)) / np.maximum(norm * np.linalg.norm(ray, axis=-1), 1e-12)
    ok = ok_u & ok_v & (norm > 0)
    return np.where(ok, np.arccos(np.clip(cos, 0.0, 1.0)), 0.0)


def _edge_background(z: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the farthest 4-neighbour's depth, that neighbour's depth minus the pixel's, >= 0) per pixel;
    invalid neighbours are ignored."""
    far = z.copy()
    for axis in (0, 1):
        for step in (1, -1):
            nb, nb_valid = _neighbour(z, valid, axis, step)
            far = np.where(nb_valid & (nb > far), nb, far)
    return far, far - z
