"""The one posed RGB-D frame type shared by datasets, the voxel map and the ROS node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgov3d_core.geometry import GeometryError, check_intrinsics, check_rigid


class FrameError(ValueError):
    """A frame that cannot be used (shape/dtype mismatch, bad pose or intrinsics, no valid depth)."""


@dataclass
class Frame:
    """A posed RGB-D frame, colour registered to depth at the depth resolution.

    color:  (H, W, 3) uint8 RGB.
    depth:  (H, W) float32 metres; 0, NaN and inf mark invalid pixels.
    K:      3x3 pinhole intrinsics of the depth image.
    pose:   4x4 camera-to-world transform (camera: x right, y down, z forward).
    labels: optional (H, W) int32 per-pixel class/entity ids, -1 = unlabelled.
    """

    color: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    pose: np.ndarray
    frame_id: str = ""
    timestamp: float | None = None
    labels: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    def validate(self) -> Frame:
        """Check shapes, dtypes, pose rigidity and intrinsics; raise FrameError naming the frame."""
        name = f"frame {self.frame_id!r}" if self.frame_id else "frame"
        depth = np.asarray(self.depth)
        color = np.asarray(self.color)
        if depth.ndim != 2:
            raise FrameError(f"{name}: depth must be (H, W), got shape {depth.shape}")
        if color.ndim != 3 or color.shape[2] != 3:
            raise FrameError(f"{name}: color must be (H, W, 3) RGB, got shape {color.shape}")
        if color.shape[:2] != depth.shape:
            raise FrameError(
                f"{name}: color size {color.shape[1]}x{color.shape[0]} does not match "
                f"depth size {depth.shape[1]}x{depth.shape[0]}"
            )
        if color.dtype != np.uint8:
            raise FrameError(f"{name}: color must be uint8, got {color.dtype}")
        if not np.issubdtype(depth.dtype, np.floating):
            raise FrameError(f"{name}: depth must be float metres, got {depth.dtype}")
        if self.labels is not None and np.asarray(self.labels).shape != depth.shape:
            raise FrameError(
                f"{name}: labels shape {np.asarray(self.labels).shape} does not match depth {depth.shape}"
            )
        try:
            check_intrinsics(self.K, name=f"{name} intrinsics")
            check_rigid(self.pose, name=f"{name} pose")
        except GeometryError as exc:
            raise FrameError(str(exc)) from None
        return self
