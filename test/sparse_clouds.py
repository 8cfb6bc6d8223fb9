"""Test helpers shared by the sparse-network tests (test_model, test_minkowski)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread unless a test asks for more: tiny sparse-conv ops with several threads crawl when
    another process holds a core (see config/stage1.yaml, train.threads). Autouse in every test
    module that imports it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def surface_cloud(n: int, seed: int, extent: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on three faces of a box corner (a sparse 2-D manifold like real scans) + colours."""
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand((n, 2), generator=g) * extent
    face = torch.randint(0, 3, (n,), generator=g)
    pts = torch.zeros((n, 3))
    for f in range(3):
        sel = face == f
        axes = [a for a in range(3) if a != f]
        pts[sel, axes[0]] = uv[sel, 0]
        pts[sel, axes[1]] = uv[sel, 1]
    return pts + seed * 0.37, torch.rand((n, 3), generator=g)
