"""The sparse batch the 3D network consumes, and how variable-size clouds become one.

A batch holds B point clouds, each voxelised: the network runs on voxels (coords + features),
and `inverse` maps every point back to its voxel row so outputs (and losses) are per point. The
batch index lives in column 0 of `coords`, so clouds never interact in a sparse convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from pgov3d_core.geometry import voxelize


@dataclass
class SparseBatch:
    """coords: (M, 4) int32 [batch, x, y, z], non-negative per cloud, unique per cloud.
    feats: (M, C) float32 voxel features. inverse: (N,) int64 point → voxel row (global).
    point_batch: (N,) int64 cloud index of every point. batch_size: number of clouds B.
    inverse None asks the model for one output row per voxel (the training objective's use)."""

    coords: torch.Tensor
    feats: torch.Tensor
    inverse: torch.Tensor | None
    point_batch: torch.Tensor
    batch_size: int

    @property
    def num_points(self) -> int:
        """Rows of the model's output: points, or voxels when inverse is None."""
        return self.num_voxels if self.inverse is None else int(self.inverse.shape[0])

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SparseBatch:
        return SparseBatch(
            **{
                f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    def pin_memory(self) -> SparseBatch:
        return SparseBatch(
            **{
                f.name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )


@dataclass
class VoxelCloud:
    """One voxelised cloud: coords (M, 3) int64 voxel coordinates, feats (M, C) float32 voxel
    features (mean of the point features in the voxel), inverse (N,) int64 point → voxel row."""

    coords: torch.Tensor
    feats: torch.Tensor
    inverse: torch.Tensor

    @property
    def num_points(self) -> int:
        return int(self.inverse.shape[0])


def voxelize_cloud(points: torch.Tensor, point_feats: torch.Tensor, voxel_size: float) -> VoxelCloud:
    """Points + per-point features → a VoxelCloud whose voxel features are per-voxel means
    (colour averaged over the points that fall in a voxel, as MinkowskiEngine's UNWEIGHTED_AVERAGE
    quantisation mode does)."""
    coords, inverse, counts = voxelize(points, voxel_size)
    feats = torch.zeros((coords.shape[0], point_feats.shape[1]), dtype=torch.float32)
    feats.index_add_(0, inverse, point_feats.to(torch.float32))
    feats /= counts.unsqueeze(1).to(torch.float32)
    return VoxelCloud(coords=coords, feats=feats, inverse=inverse)


def collate_clouds(clouds: Sequence[VoxelCloud]) -> SparseBatch:
    """Concatenate clouds into one SparseBatch. Each cloud's coordinates are shifted so their
    minimum is 0 (spconv needs non-negative indices; the shift is per cloud, so a cloud's output
    does not depend on which other clouds share its batch)."""
    coords, feats, inverse, point_batch = [], [], [], []
    voxel_offset = 0
    for b, cloud in enumerate(clouds):
        c = cloud.coords.to(torch.int64)
        if c.shape[0]:
            c = c - c.min(dim=0).values
        coords.append(torch.cat([torch.full((c.shape[0], 1), b, dtype=torch.int64), c], dim=1))
        feats.append(cloud.feats)
        inverse.append(cloud.inverse + voxel_offset)
        point_batch.append(torch.full((cloud.num_points,), b, dtype=torch.int64))
        voxel_offset += c.shape[0]
    if not clouds:
        raise ValueError("collate_clouds needs at least one cloud")
    return SparseBatch(
        coords=torch.cat(coords).to(torch.int32),
        feats=torch.cat(feats).to(torch.float32),
        inverse=torch.cat(inverse),
        point_batch=torch.cat(point_batch),
        batch_size=len(clouds),
    )


def point_offsets(clouds: Sequence[VoxelCloud]) -> list[int]:
    """Row of each cloud's first point in the collated point arrays."""
    out, total = [], 0
    for cloud in clouds:
        out.append(total)
        total += cloud.num_points
    return out
