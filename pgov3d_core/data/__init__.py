"""Scene data: the canonical posed RGB-D frame format, readers and the synthetic generator."""

from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.data.scene import PointCloud, Scene, SceneError, SceneMeta, write_scene

__all__ = ["Frame", "FrameError", "PointCloud", "Scene", "SceneError", "SceneMeta", "write_scene"]
