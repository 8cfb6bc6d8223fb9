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
* Sensor errors (`sensor.SensorNoise`, `generate_scene(sensor_noise=True)`): frames can carry a
  consumer RGB-D camera's depth noise, dropouts, flying pixels and per-frame exposure, while labels,
  poses and the scene cloud stay exact (a scan's fused reconstruction).
* Determinism: everything derives from the seed through separate numpy random streams (layout,
  trajectory, cloud sampling), so a seed reproduces byte-identical files; nothing depends on
  time, hashing of Python objects or set order.

In-memory API (benchmarks): `SyntheticRoom.random(seed)`, `room.trajectory(n)`,
`room.render(K, pose, width, height)`, `room.sample_cloud(density)`. On-disk API:
`generate_scene`, `generate_dataset`, and the CLI `python -m pgov3d_core.data.synthetic --help`.

Modules, one concern each: `classes` (the class list), `primitives` (boxes, cylinders, room faces,
ray intersection; parts and objects), `textures` (palettes, texture patterns, shading),
`renderer` (`SyntheticRoom`: camera path, rendering, surface cloud; camera helpers), `furniture`
(object recipes), `layout` (random room layouts), `sensor` (camera errors on frames), `output`
(scene folders, datasets, CLI). Every public name is importable from `pgov3d_core.data.synthetic`.
"""

from pgov3d_core.data.synthetic.classes import CLASS_ID, CLASS_NAMES, OBJECT_CLASSES, STRUCTURE_CLASSES
from pgov3d_core.data.synthetic.layout import RoomBuilder
from pgov3d_core.data.synthetic.output import (
    DEPTH_SCALE,
    GENERATOR_VERSION,
    INSTANCE_DIR,
    generate_dataset,
    generate_scene,
    main,
    scene_is_complete,
)
from pgov3d_core.data.synthetic.primitives import Box, Cylinder, Part, RoomFace, SceneObject, intersect_room
from pgov3d_core.data.synthetic.renderer import (
    DEFAULT_DENSITY,
    ROOM_SIZE_RANGE,
    Render,
    SurfaceSamples,
    SyntheticRoom,
    default_intrinsics,
    look_pose,
    pixel_rays,
)
from pgov3d_core.data.synthetic.sensor import SensorNoise
from pgov3d_core.data.synthetic.textures import APPEARANCE, ART, FABRIC, GLASS, PLAIN, PLASTER, TILES, WOOD, Variant

__all__ = [
    "APPEARANCE", "ART", "Box", "CLASS_ID", "CLASS_NAMES", "Cylinder", "DEFAULT_DENSITY", "DEPTH_SCALE", "FABRIC",
    "GENERATOR_VERSION", "GLASS", "INSTANCE_DIR", "OBJECT_CLASSES", "PLAIN", "PLASTER", "Part", "ROOM_SIZE_RANGE",
    "Render", "RoomBuilder", "RoomFace", "STRUCTURE_CLASSES", "SceneObject", "SensorNoise", "SurfaceSamples",
    "SyntheticRoom", "TILES", "Variant", "WOOD", "default_intrinsics", "generate_dataset", "generate_scene",
    "intersect_room", "look_pose", "main", "pixel_rays", "scene_is_complete",
]
