"""Writing synthetic rooms as canonical scene folders (`generate_scene`, the resumable
`generate_dataset`) and the CLI `python -m pgov3d_core.data.synthetic` (`synthetic_scenes`)."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pgov3d_core.data.frame import Frame
from pgov3d_core.data.scene import META_FILE, Scene, SceneError, write_ply_cloud, write_scene
from pgov3d_core.data.synthetic.classes import CLASS_NAMES
from pgov3d_core.data.synthetic.renderer import DEFAULT_DENSITY, SurfaceSamples, SyntheticRoom, default_intrinsics
from pgov3d_core.data.synthetic.sensor import SensorNoise
from pgov3d_core.fileio import atomic_write_dir

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: scene.ply holds only surface points some frame observes (cloud='observed')
DEPTH_SCALE = 1000.0  # depth PNG units per metre (ScanNet's millimetres)
INSTANCE_DIR = "instance"

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
    sensor_noise: bool = False,
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

    `sensor_noise`: give the frames a consumer RGB-D camera's errors (`sensor.SensorNoise`: depth
    noise growing with distance and incidence, no depth at grazing angles, flying pixels on depth
    edges, per-frame exposure and white balance), seeded by the room's seed; labels, poses and
    the scan cloud stay exact. False: exact rendered frames.

    Refuses to write over existing outputs unless `overwrite` (which first removes exactly the
    files and folders this function writes)."""
    check_scene_settings(n_frames=n_frames, width=width, height=height, density=density, color_format=color_format,
                         cloud=cloud, sensor_noise=sensor_noise)
    root = Path(out_dir)
    existing = [name for name in _OUTPUTS if (root / name).exists()]
    if existing:
        if not overwrite:
            raise FileExistsError(f"{root}: already holds scene outputs ({', '.join(existing)}); use overwrite=True")
        for name in existing:
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    room = SyntheticRoom.random(seed)
    samples = room.sample_points(density)
    n_surface = len(samples.xyz)
    if cloud == "observed":
        keep = room.observed_mask(samples.xyz, default_intrinsics(width, height), room.trajectory(n_frames),
                                  width, height)
        samples = SurfaceSamples(samples.xyz[keep], samples.normals[keep], samples.rgb[keep],
                                 samples.labels[keep], samples.instances[keep])
    write_ply_cloud(root / "scene.ply", samples.cloud(), extra={"instance": samples.instances.astype(np.int32)})

    noise = SensorNoise(seed=seed) if sensor_noise else None

    def frames() -> Iterator[Frame]:
        for i, (frame, inst) in enumerate(room.render_frames(n_frames, width, height)):
            if noise is not None:
                frame.depth, frame.color = noise.apply(frame.depth, frame.color, frame.K, i)
            path = root / INSTANCE_DIR / f"{frame.frame_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(inst.astype(np.uint16)).save(path)
            yield frame

    summary = room.summary()
    summary.update({"generator": f"pgov3d_core.data.synthetic v{GENERATOR_VERSION}", "n_frames": n_frames,
                    "width": width, "height": height, "cloud_density": float(density),
                    "cloud": cloud, "cloud_points": len(samples.xyz), "surface_points": n_surface,
                    "sensor_noise": bool(sensor_noise)})
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


def check_scene_settings(**settings) -> None:
    """ValueError naming the first generate_scene setting of the wrong type or range (a config value
    such as `data.synthetic.n_frames=abc` would otherwise fail deep in rendering, or, for
    `sensor_noise: "no"`, silently count as true). Settings not given are not checked."""
    def bad(key, want):
        return ValueError(f"synthetic scene setting {key} must be {want}, got {settings[key]!r}")

    for key, low in (("n_frames", 1), ("width", 2), ("height", 2)):
        value = settings.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad(key, f"an integer >= {low}")
    density = settings.get("density", DEFAULT_DENSITY)
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not density > 0:
        raise bad("density", "a number > 0 (points per square metre)")
    for key, choices in (("cloud", ("observed", "all")), ("color_format", ("png", "jpg"))):
        if settings.get(key, choices[0]) not in choices:
            raise bad(key, f"one of {choices}")
    if not isinstance(settings.get("sensor_noise", False), bool):
        raise bad("sensor_noise", "true or false")


def generate_dataset(
    root: str | os.PathLike,
    seeds: Iterable[int],
    on_scene: Callable[[Path, bool], None] | None = None,
    workers: int = 1,
    **scene_kwargs,
) -> list[Path]:
    """One scene per seed at `root/scene_XXXX` (XXXX = seed, zero-padded). Resumable: complete
    scenes are skipped; each scene is written into a hidden temporary folder under `root` and
    renamed into place at the end, so an interrupted scene never looks complete (its leftovers
    are removed on the next run; do not run two writers on one root). A complete scene written
    with other settings (frames, size, density, cloud, sensor noise: its meta.yaml records them)
    is a ValueError naming them, not silently reused. `on_scene(path,
    generated)` is called per seed, in seed order. `workers` > 1 writes that many scenes at once
    in spawned processes (the files are the same: each scene depends on its seed only).
    `scene_kwargs` go to `generate_scene`."""
    check_scene_settings(**scene_kwargs)  # before any scene is compared, written or handed to a worker
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    todo = [seed for seed in seeds if not scene_is_complete(root / f"scene_{seed:04d}")]
    for seed in seeds:
        if seed not in todo:
            changed = _changed_settings(root / f"scene_{seed:04d}", scene_kwargs)
            if changed:
                raise ValueError(f"{root / f'scene_{seed:04d}'}: written with other settings than asked for "
                                 f"({'; '.join(changed)}); remove the scene folder to write it again, or use "
                                 "another root")
    if workers > 1 and len(todo) > 1:
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)),
                                                    mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_write_scene, root, seed, scene_kwargs) for seed in todo]:
                future.result()  # a failed scene raises here, after the others have finished
    else:
        for seed in todo:
            _write_scene(root, seed, scene_kwargs)
    out = []
    for seed in seeds:
        dest = root / f"scene_{seed:04d}"
        if on_scene is not None:
            on_scene(dest, seed in todo)
        out.append(dest)
    return out


# generate_scene keyword -> the meta.yaml `synthetic` key it is recorded under (scenes written
# before a setting existed record nothing; they were made with its default).
_RECORDED_SETTINGS = {"n_frames": "n_frames", "width": "width", "height": "height", "density": "cloud_density",
                      "cloud": "cloud", "sensor_noise": "sensor_noise"}


def _changed_settings(path: Path, scene_kwargs: dict) -> list[str]:
    """'key: recorded -> asked' for each recorded generator setting of the complete scene at `path`
    that differs from what `scene_kwargs` (with generate_scene's defaults) asks for."""
    defaults = {k: p.default for k, p in inspect.signature(generate_scene).parameters.items()}
    recorded = Scene(path).meta.extra.get("synthetic", {})
    changed = []
    for arg, key in _RECORDED_SETTINGS.items():
        asked = scene_kwargs.get(arg, defaults[arg])
        have = recorded.get(key, defaults[arg])
        if have != asked:  # 1500 and 1500.0 compare equal
            changed.append(f"{arg}: {have!r} -> {asked!r}")
    return changed


def _write_scene(root: Path, seed: int, scene_kwargs: dict) -> None:
    """Write scene `seed` under `root` atomically, removing leftovers of an interrupted write."""
    name = f"scene_{seed:04d}"
    dest = root / name
    for stale in sorted(root.glob(f".{name}.*.partial")):
        shutil.rmtree(stale, ignore_errors=True)
    if dest.exists():
        log.warning("%s: incomplete scene folder, regenerating it", dest)
        shutil.rmtree(dest)
    atomic_write_dir(dest, lambda tmp: generate_scene(tmp, seed, **scene_kwargs))


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
    parser.add_argument("--sensor-noise", action="store_true",
                        help="give the frames a consumer RGB-D camera's errors (depth noise, dropouts, flying "
                             "pixels, per-frame exposure); labels, poses and scene.ply stay exact")
    parser.add_argument("--scenes", type=int, default=None,
                        help="write a dataset of this many scenes (seeds SEED…SEED+N-1) as OUT/scene_XXXX, "
                             "skipping complete ones")
    parser.add_argument("--overwrite", action="store_true",
                        help="single scene: replace existing scene outputs in OUT")
    args = parser.parse_args(argv)
    kwargs = {"n_frames": args.frames, "width": args.width, "height": args.height, "density": args.density,
              "color_format": args.color_format, "sensor_noise": args.sensor_noise}
    try:
        check_scene_settings(**kwargs)
    except ValueError as exc:
        parser.error(str(exc))
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

