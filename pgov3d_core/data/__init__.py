"""Scene data: the canonical posed RGB-D frame format, readers and the synthetic generator."""

from pgov3d_core.data.frame import Frame, FrameError

__all__ = ["Frame", "FrameError"]
