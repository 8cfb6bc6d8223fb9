"""Training augmentation: random rotation about gravity (z), uniform scaling, a small translation,
a global colour jitter and (off by default) random thinning to a uniform point density and
per-point coordinate jitter.

One `Augmentation` is drawn per training sample and applied to every cloud of it — both frames of
a stage-1 pair get the same transform — so matched pairs stay the same physical point and the
consistency term compares like with like. Colour jitter is a global affine change (contrast,
brightness, per-channel gain), not per-point noise, for the same reason.

Thinning (`thin: [min, max]` metres, off at [0, 0]) keeps one random point per cell of a grid whose
cell size is drawn per sample. Why: a frame's back-projected points are dense near the camera and
sparse far away, while a scan's cloud is about uniform; a voxel's feature is the mean colour of its
points, so a network that only saw frames saw near surfaces' texture averaged over many points.
Thinning frames on a 5 cm grid cost a stage-1 model 10 points of table recall on its own training
frames, about the gap between its frames and the same surfaces in the scan's cloud (README "Where
learning stands").

Jitter (`jitter: [sigma, clip]` metres, off at [0, 0]) adds clipped Gaussian noise to every point's
coordinates, as Pointcept's RandomJitter does. Why: rendered surfaces are exact planes, each in one
layer of network voxels, while a real scan's surfaces are a few millimetres thick and split between
two layers where a voxel boundary runs through them; without jitter 1-3 mm of noise on the
validation rooms' clouds cost the default up to 5 mIoU. In stage 2 (5 mm) it removed most of that
loss for 0.3 / 1.3 mIoU on exact clouds (seeds 0 / 1); in stage 1 it slowed learning (README "Grid
phase and coordinate noise").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pgov3d_core.config import from_section
from pgov3d_core.geometry import rotation_z


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotate_z: float = math.pi  # max |angle| (radians) about the z axis
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1  # max |shift| per axis, metres (moves the voxel grid phase)
    contrast: float = 0.1  # factor in [1 - c, 1 + c]
    brightness: float = 0.05  # shift in [-b, b] (colours in [0, 1])
    channel_gain: float = 0.05  # per-channel factor in [1 - g, 1 + g]
    thin: tuple[float, float] = (0.0, 0.0)  # grid cell (m) of one-point-per-cell thinning, drawn in [min, max]
    jitter: tuple[float, float] = (0.0, 0.0)  # [sigma, clip] (m) of per-point Gaussian coordinate noise

    def __post_init__(self) -> None:
        lo, hi = _number_pair(self.scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be [min, max] with 0 < min <= max, got {self.scale!r}")
        self.scale = (lo, hi)
        lo, hi = _number_pair(self.thin)
        if not 0 <= lo <= hi:
            raise ValueError(f"thin must be [min, max] metres with 0 <= min <= max, got {self.thin!r}")
        self.thin = (lo, hi)
        sigma, clip = _number_pair(self.jitter)
        if not (sigma >= 0 and clip >= 0 and (sigma == 0) == (clip == 0)):
            raise ValueError(f"jitter must be [sigma, clip] metres, both > 0 (or both 0: off), got {self.jitter!r}")
        self.jitter = (sigma, clip)

    def jittered(self, xyz: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """`xyz` (N, 3) plus per-point noise N(0, sigma) clipped to [-clip, clip]; `xyz` itself (and
        no random draw) when jitter or augmentation is off."""
        sigma, clip = self.jitter
        if not self.enabled or sigma == 0 or xyz.shape[0] == 0:
            return xyz
        noise = torch.randn(xyz.shape, generator=g, dtype=torch.float32) * sigma
        return xyz + noise.clamp_(-clip, clip).to(xyz.dtype)

    def thin_cell(self, g: torch.Generator) -> float:
        """A sample's thinning cell size (m); 0 (and no random draw) when thinning is off."""
        if not self.enabled or self.thin[1] == 0:
            return 0.0
        return float(_uniform(g, *self.thin))

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        return from_section(cls, d, "data.augment")


def _number_pair(value) -> tuple[float, float]:
    """Two finite numbers from a config value, or (nan, nan) — which every range check above refuses,
    naming the setting — for anything else ("abc", [1], [1, 2, 3])."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return float("nan"), float("nan")
    return lo, hi


def _uniform(g: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


@dataclass
class Augmentation:
    rotation: torch.Tensor  # (3, 3) float32
    scale: float
    shift: torch.Tensor  # (3,) float32
    contrast: float
    brightness: float
    gain: torch.Tensor  # (3,) float32

    @classmethod
    def identity(cls) -> Augmentation:
        return cls(torch.eye(3), 1.0, torch.zeros(3), 1.0, 0.0, torch.ones(3))

    @classmethod
    def sample(cls, cfg: AugmentConfig, g: torch.Generator) -> Augmentation:
        if not cfg.enabled:
            return cls.identity()
        return cls(
            rotation=rotation_z(float(_uniform(g, -cfg.rotate_z, cfg.rotate_z))),
            scale=float(_uniform(g, *cfg.scale)),
            shift=_uniform(g, -cfg.translate, cfg.translate, (3,)).float(),
            contrast=float(_uniform(g, 1 - cfg.contrast, 1 + cfg.contrast)),
            brightness=float(_uniform(g, -cfg.brightness, cfg.brightness)),
            gain=_uniform(g, 1 - cfg.channel_gain, 1 + cfg.channel_gain, (3,)).float(),
        )

    def points(self, xyz: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Rotate about `center` (z axis through it), scale, shift."""
        return ((xyz - center) @ self.rotation.T) * self.scale + center + self.shift

    def normals(self, n: torch.Tensor) -> torch.Tensor:
        return n @ self.rotation.T  # uniform scaling keeps directions

    def colors(self, rgb01: torch.Tensor) -> torch.Tensor:
        """Colours in [0, 1] → jittered colours in [0, 1]."""
        out = ((rgb01 - 0.5) * self.contrast + 0.5 + self.brightness) * self.gain
        return out.clamp_(0.0, 1.0)
