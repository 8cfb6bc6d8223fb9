"""Furniture recipes: each builds one object's parts in its local frame from a random stream
(sizes drawn per instance); `layout` places them in the room."""

from __future__ import annotations

import numpy as np

# A part in an object's local frame (x = width, y = depth with the front at +y, z up, origin on
# the floor): ("box", centre (3,), half (3,), role) or ("cyl", centre (2,), radius, z0, z1, role).
LocalPart = tuple


def lbox(center, half, role: str = "main") -> LocalPart:
    return ("box", np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64), role)


def lcyl(center, radius: float, z0: float, z1: float, role: str = "main") -> LocalPart:
    return ("cyl", np.asarray(center, dtype=np.float64), float(radius), float(z0), float(z1), role)


def local_extent(parts: list[LocalPart]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for p in parts:
        if p[0] == "box":
            plo, phi = p[1] - p[2], p[1] + p[2]
        else:
            plo = np.array([p[1][0] - p[2], p[1][1] - p[2], p[3]])
            phi = np.array([p[1][0] + p[2], p[1][1] + p[2], p[4]])
        lo, hi = np.minimum(lo, plo), np.maximum(hi, phi)
    return lo, hi



def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def chair(rng) -> list[LocalPart]:
    w, d, sh, st = _u(rng, 0.42, 0.5), _u(rng, 0.42, 0.5), _u(rng, 0.42, 0.48), _u(rng, 0.035, 0.06)
    leg, bh, bt = _u(rng, 0.025, 0.04), _u(rng, 0.38, 0.5), _u(rng, 0.03, 0.05)
    parts = [lbox((0, 0, sh - st / 2), (w / 2, d / 2, st / 2))]
    lh = (sh - st) / 2
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(lbox((sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), lh), (leg / 2, leg / 2, lh), "frame"))
    parts.append(lbox((0, -d / 2 + bt / 2, sh + bh / 2), (w / 2, bt / 2, bh / 2)))
    return parts


def table(rng) -> list[LocalPart]:
    w, d, h, tt = _u(rng, 0.8, 1.8), _u(rng, 0.7, 1.0), _u(rng, 0.72, 0.78), _u(rng, 0.03, 0.05)
    leg, inset = _u(rng, 0.05, 0.07), _u(rng, 0.02, 0.08)
    parts = [lbox((0, 0, h - tt / 2), (w / 2, d / 2, tt / 2))]
    lh = (h - tt) / 2
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(lbox((sx * (w / 2 - inset - leg / 2), sy * (d / 2 - inset - leg / 2), lh),
                               (leg / 2, leg / 2, lh), "frame"))
    return parts


def round_table(rng) -> list[LocalPart]:
    r, h, tt = _u(rng, 0.45, 0.6), _u(rng, 0.72, 0.78), _u(rng, 0.03, 0.05)
    return [lcyl((0, 0), r, h - tt, h), lcyl((0, 0), _u(rng, 0.04, 0.06), 0.03, h - tt, "frame"),
            lcyl((0, 0), _u(rng, 0.22, 0.3), 0.0, 0.03, "frame")]


def desk(rng) -> list[LocalPart]:
    w, d, h, tt = _u(rng, 1.0, 1.6), _u(rng, 0.6, 0.8), _u(rng, 0.72, 0.76), _u(rng, 0.025, 0.04)
    pw, lh = _u(rng, 0.38, 0.45), h - tt
    side = 1 if rng.random() < 0.5 else -1
    px = side * (w / 2 - pw / 2)
    parts = [lbox((0, 0, h - tt / 2), (w / 2, d / 2, tt / 2)),
             lbox((px, 0.0, lh / 2), (pw / 2, d / 2 - 0.02, lh / 2)),
             lbox((-side * (w / 2 - 0.015), 0.0, lh / 2), (0.015, d / 2 - 0.02, lh / 2)),
             lbox((0.0, -d / 2 + 0.04, h - tt - 0.15), (w / 2 - 0.03, 0.01, 0.15))]
    n_drawers = int(rng.integers(2, 4))
    for k in range(n_drawers):
        z = lh * (k + 0.5) / n_drawers
        parts.append(lbox((px, d / 2 - 0.02 + 0.012, z), (0.06, 0.012, 0.01), "handle"))
    return parts


def sofa(rng) -> list[LocalPart]:
    w, d, sh = _u(rng, 1.6, 2.4), _u(rng, 0.8, 1.0), _u(rng, 0.4, 0.46)
    arm, ah, bt, bh = _u(rng, 0.12, 0.2), _u(rng, 0.55, 0.65), _u(rng, 0.18, 0.25), _u(rng, 0.8, 0.95)
    return [lbox((0, bt / 2, sh / 2), (w / 2 - arm, d / 2 - bt / 2, sh / 2)),
            lbox((0, -d / 2 + bt / 2, bh / 2), (w / 2 - arm, bt / 2, bh / 2)),
            lbox((-w / 2 + arm / 2, 0, ah / 2), (arm / 2, d / 2, ah / 2)),
            lbox((w / 2 - arm / 2, 0, ah / 2), (arm / 2, d / 2, ah / 2))]


def bed(rng) -> list[LocalPart]:
    w, length, fh, mh = _u(rng, 0.9, 1.8), _u(rng, 1.95, 2.1), _u(rng, 0.25, 0.35), _u(rng, 0.18, 0.25)
    hb_t, hb_h = _u(rng, 0.05, 0.08), _u(rng, 0.9, 1.2)
    y0 = -length / 2 + hb_t  # foot of the headboard
    parts = [lbox((0, hb_t / 2, fh / 2), (w / 2, (length - hb_t) / 2, fh / 2)),
             lbox((0, -length / 2 + hb_t / 2, hb_h / 2), (w / 2, hb_t / 2, hb_h / 2)),
             lbox((0, hb_t / 2, fh + mh / 2), (w / 2 - 0.03, (length - hb_t) / 2 - 0.03, mh / 2), "bedding")]
    n_pillows = 1 if w < 1.2 else 2
    pw = (w - 0.12) / n_pillows - 0.04
    for k in range(n_pillows):
        x = -w / 2 + 0.06 + (k + 0.5) * (w - 0.12) / n_pillows
        parts.append(lbox((x, y0 + 0.06 + 0.2, fh + mh + 0.06), (pw / 2, 0.2, 0.06), "pillow"))
    return parts


def cabinet(rng) -> list[LocalPart]:
    w, d = _u(rng, 0.5, 1.2), _u(rng, 0.4, 0.6)
    h = _u(rng, 0.7, 0.95) if rng.random() < 0.5 else _u(rng, 1.6, 2.1)
    parts = [lbox((0, 0, h / 2), (w / 2, d / 2, h / 2)), lbox((0, 0, h + 0.01), (w / 2 + 0.01, d / 2 + 0.01, 0.01))]
    n_doors = 1 if w < 0.7 else 2
    for k in range(n_doors):
        x = 0.0 if n_doors == 1 else (-0.05 if k == 0 else 0.05)
        parts.append(lbox((x, d / 2 + 0.012, h * 0.6), (0.01, 0.012, 0.07), "handle"))
    return parts


def bookshelf(rng) -> list[LocalPart]:
    w, d, h, b = _u(rng, 0.6, 1.2), _u(rng, 0.25, 0.4), _u(rng, 1.5, 2.1), _u(rng, 0.02, 0.03)
    n_shelves = int(rng.integers(3, 6))
    plinth = 0.08
    parts = [lbox((-w / 2 + b / 2, 0, h / 2), (b / 2, d / 2, h / 2)),
             lbox((w / 2 - b / 2, 0, h / 2), (b / 2, d / 2, h / 2)),
             lbox((0, 0, h - b / 2), (w / 2 - b, d / 2, b / 2)),
             lbox((0, 0, plinth / 2), (w / 2 - b, d / 2, plinth / 2)),
             lbox((0, -d / 2 + 0.005, h / 2), (w / 2 - b, 0.005, h / 2))]
    levels = np.linspace(plinth, h - b, n_shelves + 1)
    for z in levels[1:-1]:
        parts.append(lbox((0, 0, z), (w / 2 - b, d / 2, b / 2)))
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
            parts.append(lbox((x + bw / 2, -d / 2 + 0.01 + 0.36 * d, z0 + bh / 2), (bw / 2, 0.35 * d, bh / 2),
                               "books"))
            x += bw + _u(rng, 0.02, 0.2) * inner
    return parts


def refrigerator(rng) -> list[LocalPart]:
    w, d, h = _u(rng, 0.6, 0.8), _u(rng, 0.6, 0.7), _u(rng, 1.6, 1.9)
    split = h * _u(rng, 0.55, 0.7)
    x = w / 2 - 0.06
    return [lbox((0, 0, h / 2), (w / 2, d / 2, h / 2)),
            lbox((x, d / 2 + 0.02, split - 0.3), (0.012, 0.02, 0.2), "handle"),
            lbox((x, d / 2 + 0.02, split + 0.15), (0.012, 0.02, 0.1), "handle")]


def toilet(rng) -> list[LocalPart]:
    r, bh = _u(rng, 0.17, 0.21), _u(rng, 0.38, 0.42)
    tw, td, top = _u(rng, 0.36, 0.46), _u(rng, 0.16, 0.2), _u(rng, 0.75, 0.85)
    yb = -0.35 + td + r - 0.04
    return [lbox((0, -0.35 + td / 2, (top + bh - 0.05) / 2), (tw / 2, td / 2, (top - bh + 0.05) / 2)),
            lbox((0, -0.35 + td / 2 + 0.03, (bh - 0.05) / 2), (0.1, 0.08, (bh - 0.05) / 2)),
            lcyl((0, yb), r, 0.0, bh), lcyl((0, yb), r + 0.01, bh, bh + 0.03)]


def sink(rng) -> list[LocalPart]:
    w, d, ph, bh = _u(rng, 0.5, 0.65), _u(rng, 0.4, 0.5), _u(rng, 0.65, 0.72), _u(rng, 0.15, 0.2)
    return [lcyl((0, -d / 2 + 0.15), _u(rng, 0.07, 0.1), 0.0, ph),
            lbox((0, 0, ph + bh / 2), (w / 2, d / 2, bh / 2)),
            lcyl((0, -d / 2 + 0.06), 0.015, ph + bh, ph + bh + 0.15, "handle"),
            lbox((0, -d / 2 + 0.1, ph + bh + 0.14), (0.012, 0.05, 0.01), "handle")]


def bathtub(rng) -> list[LocalPart]:
    w, d, h, e = _u(rng, 1.5, 1.8), _u(rng, 0.7, 0.8), _u(rng, 0.5, 0.6), _u(rng, 0.06, 0.09)
    return [lbox((0, 0, 0.05), (w / 2 - e, d / 2 - e, 0.05)),
            lbox((0, d / 2 - e / 2, h / 2), (w / 2, e / 2, h / 2)),
            lbox((0, -d / 2 + e / 2, h / 2), (w / 2, e / 2, h / 2)),
            lbox((-w / 2 + e / 2, 0, h / 2), (e / 2, d / 2 - e, h / 2)),
            lbox((w / 2 - e / 2, 0, h / 2), (e / 2, d / 2 - e, h / 2)),
            lcyl((w / 2 - e - 0.08, -d / 2 + e / 2), 0.02, h, h + 0.12, "handle")]


def door(rng) -> list[LocalPart]:
    w, h, t = _u(rng, 0.8, 1.0), _u(rng, 2.0, 2.1), 0.04
    c = 0.06  # casing width
    return [lbox((0, t / 2, h / 2), (w / 2, t / 2, h / 2)),
            lbox((-w / 2 - c / 2, 0.025, (h + c) / 2), (c / 2, 0.025, (h + c) / 2), "frame"),
            lbox((w / 2 + c / 2, 0.025, (h + c) / 2), (c / 2, 0.025, (h + c) / 2), "frame"),
            lbox((0, 0.025, h + c / 2), (w / 2, 0.025, c / 2), "frame"),
            lbox((w / 2 - 0.09, t + 0.02, 1.0), (0.06, 0.02, 0.012), "handle")]


def window(rng, room_h: float) -> list[LocalPart]:
    w, h, sill = _u(rng, 0.8, 1.6), _u(rng, 1.0, 1.4), _u(rng, 0.8, 1.0)
    h = min(h, room_h - sill - 0.25)
    fb, fd = 0.06, 0.06  # frame bar width and depth
    parts = [lbox((0, fd / 2, sill + fb / 2), (w / 2, fd / 2, fb / 2), "frame"),
             lbox((0, fd / 2, sill + h - fb / 2), (w / 2, fd / 2, fb / 2), "frame"),
             lbox((-w / 2 + fb / 2, fd / 2, sill + h / 2), (fb / 2, fd / 2, h / 2 - fb), "frame"),
             lbox((w / 2 - fb / 2, fd / 2, sill + h / 2), (fb / 2, fd / 2, h / 2 - fb), "frame"),
             lbox((0, 0.0075, sill + h / 2), (w / 2 - fb, 0.0075, h / 2 - fb), "glass"),
             lbox((0, 0.06, sill - 0.015), (w / 2 + 0.05, 0.06, 0.015), "frame")]
    if w > 1.1:
        parts.append(lbox((0, fd / 4, sill + h / 2), (0.02, fd / 4, h / 2 - fb), "frame"))
    return parts


def picture(rng, room_h: float) -> list[LocalPart]:
    w, h, t = _u(rng, 0.4, 1.0), _u(rng, 0.3, 0.8), _u(rng, 0.02, 0.03)
    zc = min(_u(rng, 1.3, 1.7), room_h - h / 2 - 0.15)
    b = _u(rng, 0.02, 0.05)
    return [lbox((0, t / 2, zc), (w / 2, t / 2, h / 2), "frame"),
            lbox((0, t / 2 + 0.003, zc), (w / 2 - b, t / 2 + 0.003, h / 2 - b), "art")]


def lamp(rng) -> list[LocalPart]:
    ph, sr = _u(rng, 1.3, 1.6), _u(rng, 0.15, 0.22)
    return [lcyl((0, 0), _u(rng, 0.12, 0.16), 0.0, 0.03, "frame"),
            lcyl((0, 0), _u(rng, 0.012, 0.018), 0.03, ph, "frame"),
            lcyl((0, 0), sr, ph - 0.05, ph + _u(rng, 0.22, 0.3), "shade")]

