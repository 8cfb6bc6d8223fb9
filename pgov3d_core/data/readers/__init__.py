"""Real-dataset readers: read a dataset in its own layout, or convert it into the canonical scene
folder (`pgov3d_core.data.scene`). Bad input raises `SceneError` naming the file; documented skips
(ScanNet frames with invalid poses, TUM frames without association, Redwood frames without a
pose) are logged on the ``pgov3d_core.data.readers`` logger."""

from pgov3d_core.data.readers.redwood import convert_redwood, read_log_trajectory, read_open3d_intrinsics
from pgov3d_core.data.readers.s3dis import convert_s3dis_room, read_s3dis_room
from pgov3d_core.data.readers.scannet import ScanNetScene, open_scannet_scene, read_scannet_cloud
from pgov3d_core.data.readers.threedmatch import convert_threedmatch, iter_threedmatch_frames
from pgov3d_core.data.readers.tum import associate, convert_tum, iter_tum_frames, read_timestamps, tum_pose

__all__ = [
    "ScanNetScene",
    "associate",
    "convert_redwood",
    "convert_s3dis_room",
    "convert_threedmatch",
    "convert_tum",
    "iter_threedmatch_frames",
    "iter_tum_frames",
    "open_scannet_scene",
    "read_log_trajectory",
    "read_open3d_intrinsics",
    "read_s3dis_room",
    "read_scannet_cloud",
    "read_timestamps",
    "tum_pose",
]
