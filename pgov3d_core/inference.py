"""Run a trained 3D network on point clouds: per-point features in the text-embedding space.

Used by Stage 2's pseudo-labelling, by evaluation and by the online node's network pass; the
network input is built exactly as in training (`models.inputs`: colour in [-1, 1] [+ height],
voxel means at the training voxel size; voxel layers centred on z = 0, GRID_Z_SHIFT_VOXELS).
`predict_classes` is the one argmax-cosine classification of such features against text
embeddings (evaluation, frame accuracy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from pgov3d_core.geometry import turned
from pgov3d_core.models import build_model, resolve_model_config
from pgov3d_core.models.batch import collate_clouds, voxelize_cloud
from pgov3d_core.models.inputs import check_full_cloud_inputs, point_inputs
from pgov3d_core.training.checkpoint import CheckpointError, load_checkpoint

# At inference the network's voxel layers are centred on z = 0 instead of bounded by it (the grid is
# moved up by this fraction of a voxel; the points and their height input are not). Gravity-aligned
# clouds (ScanNet's axis-aligned scans, the synthetic rooms, a ground robot's map frame) hold their
# floor at z ~ 0: on a grid with a layer boundary at z = 0, a floor a fraction of a millimetre off —
# a map's voxel means (+-0.3 mm in the demo's), any real scan — splits between two layers, which
# training never showed (exact rendered surfaces, one layer each), and the demo's map read its floor
# as "ceiling". Training draws the grid phase at random (augment.translate), so any fixed phase is in
# its distribution. Validation rooms (seeds 0 / 1): exact clouds 61.7 / 59.5 mIoU against 61.0 / 60.0,
# with 1 mm of noise 60.0 / 59.7 against 56.2 / 58.0 (README "Grid phase and coordinate noise").
GRID_Z_SHIFT_VOXELS = 0.5


def inference_grid_offset(voxel_size: float) -> torch.Tensor:
    """(3,) what is added to points before voxelising them at inference (GRID_Z_SHIFT_VOXELS)."""
    return torch.tensor([0.0, 0.0, GRID_Z_SHIFT_VOXELS * float(voxel_size)])


@dataclass
class PointFeaturePredictor:
    model: nn.Module
    voxel_size: float
    device: torch.device
    text_encoder_identity: str = ""
    checkpoint_step: int = -1
    text_encoder_config: dict | None = None  # the training run's text_encoder section
    inputs: tuple[str, ...] = ("color",)  # what the model takes per point (models/inputs.py)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> PointFeaturePredictor:
        """Model + voxel size from a pgov3d checkpoint (loaded with weights_only=True)."""
        ckpt = load_checkpoint(path, map_location="cpu")
        try:
            model = build_model(ckpt["model_config"])
            model.load_state_dict(ckpt["model"])
            voxel_size = float(((ckpt.get("config") or {}).get("data") or {}).get("voxel_size", 0.05))
            inputs = resolve_model_config(ckpt["model_config"])["inputs"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: checkpoint does not hold a usable model ({exc})") from None
        try:
            inputs = check_full_cloud_inputs(inputs)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        device = torch.device(device)
        identity = (ckpt.get("text_encoder") or {}).get("identity", "")
        te_cfg = (ckpt.get("config") or {}).get("text_encoder")
        return cls(model.to(device).eval(), voxel_size, device, identity, int(ckpt.get("step", -1)),
                   dict(te_cfg) if isinstance(te_cfg, dict) else None, inputs)

    @property
    def feature_dim(self) -> int:
        return int(self.model.out_channels)

    @torch.no_grad()
    def features(self, xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """(N, D) L2-normalised features for points `xyz` (N, 3) with colours `rgb` (N, 3) in
        0–255 (uint8 or float). Returned on CPU, float32."""
        xyz = torch.as_tensor(xyz, dtype=torch.float32)
        if xyz.shape[0] == 0:
            return torch.zeros((0, self.feature_dim))
        colour = torch.as_tensor(rgb).to(torch.float32).cpu() / 255.0
        xyz = xyz.cpu()
        grid_xyz = xyz + inference_grid_offset(self.voxel_size)
        cloud = voxelize_cloud(grid_xyz, point_inputs(self.inputs, colour, xyz), self.voxel_size)
        batch = collate_clouds([cloud]).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            out = self.model(batch)
        return out.float().cpu()

    def subset_features(self, xyz: torch.Tensor, rgb: torch.Tensor):
        """The `pseudo_labels.FeatureFn` of a cloud: (indices, angle) → features of that subset alone,
        turned by the angle about the vertical axis (what repeated grid sampling runs per pass)."""
        return lambda idx, angle: self.features(turned(xyz[idx], angle), rgb[idx])


def predict_classes(point_features: torch.Tensor, text_embeddings: torch.Tensor, chunk: int = 65536):
    """Argmax cosine similarity of (N, D) point features against (C, D) class text embeddings:
    (N,) int64 class indices on the CPU (computed in chunks of `chunk` points on the features'
    device)."""
    text = torch.nn.functional.normalize(text_embeddings.to(point_features.device, torch.float32), dim=1)
    out = torch.empty(point_features.shape[0], dtype=torch.int64)
    for s in range(0, point_features.shape[0], chunk):
        f = torch.nn.functional.normalize(point_features[s : s + chunk].float(), dim=1)
        out[s : s + chunk] = (f @ text.T).argmax(dim=1).cpu()
    return out
