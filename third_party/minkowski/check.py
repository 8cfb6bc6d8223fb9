"""One-line check of an installed MinkowskiEngine (what `make minkowski` prints last).

Imports ME the way the project does (`import_minkowski`, which undoes its sys.path side effect),
compares a float64 3x3x3 MinkowskiConvolution with a dense torch conv3d at the input's sites, and
runs a forward/backward pass of the project's tiny U-Net on the minkowski backend. Exit status 1
with the reason when any of that fails.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from pgov3d_core.models import build_model, collate_clouds, voxelize_cloud
from pgov3d_core.models.backends import BackendUnavailableError, import_minkowski


def conv_vs_dense(ME, grid: int = 8, cin: int = 3, cout: int = 4) -> float:
    """Max |ME - dense| of one 3x3x3 stride-1 convolution on ~40 % of a grid³ block, at the input sites."""
    g = torch.Generator().manual_seed(0)
    xyz = torch.nonzero(torch.rand((grid,) * 3, generator=g) < 0.4)
    feats = torch.randn((len(xyz), cin), generator=g, dtype=torch.float64)
    coords = torch.cat([torch.zeros((len(xyz), 1), dtype=torch.int64), xyz], 1).int()
    conv = ME.MinkowskiConvolution(cin, cout, kernel_size=3, stride=1, bias=False, dimension=3).double()
    out = conv(ME.SparseTensor(feats, coordinates=coords))
    dense_in = torch.zeros((1, cin, grid, grid, grid), dtype=torch.float64)
    dense_in[0, :, xyz[:, 0], xyz[:, 1], xyz[:, 2]] = feats.T
    # ME kernel row r = ix + 3 iy + 9 iz (x fastest) → conv3d weight [cout, cin, ix, iy, iz].
    weight = conv.kernel.detach().reshape(3, 3, 3, cin, cout).permute(4, 3, 2, 1, 0)
    dense = F.conv3d(dense_in, weight, padding=1)[0]
    sites = out.C[:, 1:].long()
    return float((out.F.detach() - dense[:, sites[:, 0], sites[:, 1], sites[:, 2]].T).abs().max())


def unet_step() -> int:
    """Voxels of a small random cloud after a tiny-U-Net forward/backward on the minkowski backend."""
    g = torch.Generator().manual_seed(1)
    cloud = voxelize_cloud(torch.rand((3000, 3), generator=g) * 2, torch.rand((3000, 3), generator=g), 0.05)
    batch = collate_clouds([cloud])
    torch.manual_seed(0)
    model = build_model({"preset": "tiny", "backend": "minkowski", "out_channels": 8}).train()
    model(batch).square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    if any(gr is None or not torch.isfinite(gr).all() for gr in grads):
        raise RuntimeError("a parameter of the tiny U-Net got no or a non-finite gradient")
    return batch.num_voxels


def main() -> int:
    try:
        ME = import_minkowski()
        err = conv_vs_dense(ME)
        voxels = unet_step()
    except (BackendUnavailableError, RuntimeError, ValueError) as exc:
        print(f"MinkowskiEngine check FAILED: {exc} (to rebuild: rm .venv/.stamp-minkowski-*; make minkowski)")
        return 1
    if err > 1e-10:
        print(f"MinkowskiEngine check FAILED: a 3x3x3 convolution differs from dense conv3d by {err:.1e}")
        return 1
    kind = "CUDA" if ME.is_cuda_available() else "CPU-only"
    print(f"MinkowskiEngine {ME.__version__} ({kind}, torch {torch.__version__}) ok: 3x3x3 conv = dense conv3d "
          f"(max error {err:.0e}), tiny U-Net forward/backward on {voxels} voxels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
