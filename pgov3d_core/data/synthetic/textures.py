"""Appearance: every class draws its colours from its own palettes and texture style (wood grain,
tiles, fabric weave, plaster, glass, art) with per-instance variation (`APPEARANCE`), times
Lambertian shading from two fixed lights, times a small positional hash noise. Colour is a
function of the world point, its surface normal and the part, so a surface has the same colour in
every frame and in the scene cloud."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Texture styles.
PLAIN, WOOD, TILES, FABRIC, GLASS, ART, PLASTER = range(7)
# Two fixed lights (key from above, fill from the side) for Lambertian shading.
_LIGHT_KEY = np.array([0.4, 0.25, 1.0]) / np.linalg.norm([0.4, 0.25, 1.0])
_LIGHT_FILL = np.array([-0.7, 0.6, -0.2]) / np.linalg.norm([-0.7, 0.6, -0.2])
_NOISE_CELL = 0.01  # metres: cell size of the positional hash noise


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


def mix64(h: np.ndarray) -> np.ndarray:
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
        h = mix64(h ^ (ijk[:, k] * np.uint64(primes[k])))
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



def shade(points: np.ndarray, normals: np.ndarray, base: np.ndarray, style: np.ndarray, salt: np.ndarray,
          freq: np.ndarray, pattern_amp: np.ndarray, noise_amp: np.ndarray, grain: np.ndarray,
          grain2: np.ndarray) -> np.ndarray:
    """Colour (N, 3) uint8 of surface points with the given normals (facing the viewer), from the
    per-point appearance of their parts (base colour (N, 3) in [0, 1], texture style, salt,
    frequency, pattern and noise amplitudes, grain directions (N, 3)): base colour x texture x
    (1 + hash noise) x Lambertian shading."""
    n_pts = len(points)
    g = np.einsum("ij,ij->i", points, grain)
    g2 = np.einsum("ij,ij->i", points, grain2)
    mod = np.ones((n_pts, 3))
    for s in np.unique(style):
        if s == PLAIN:
            continue
        m = style == s
        pat = _pattern(int(s), g[m], g2[m], freq[m], points[m], salt[m])
        amp = pattern_amp[m]
        mod[m] += (amp[:, None] * pat) if pat.ndim == 2 else (amp * pat)[:, None]
    cells = np.floor(points / _NOISE_CELL + 0.5)
    noise = _hash01(cells, salt) * 2.0 - 1.0
    mod *= (1.0 + noise_amp * noise)[:, None]
    key = np.clip(normals @ _LIGHT_KEY, 0.0, None)
    fill = np.clip(normals @ _LIGHT_FILL, 0.0, None)
    shade = 0.5 + 0.35 * key + 0.2 * fill
    rgb = np.clip(base * mod * shade[:, None], 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)
