"""The `torch` sparse-convolution kernels (pgov3d_core/models/gather_conv.py): the same outputs and
gradients as spconv Native for all three convolution kinds, kernel maps that never cross clouds,
the large-scene paths (sorted search, chunked gathers) equal to the small ones, and checkpoints
that move between the two algorithms."""

import pytest
import torch
import torch.nn.functional as F
from sparse_clouds import one_torch_thread, surface_cloud  # noqa: F401 (autouse fixture)

from pgov3d_core.models import build_model, collate_clouds, voxelize_cloud
from pgov3d_core.models import gather_conv as gc

sp = pytest.importorskip("spconv.pytorch")
from spconv.pytorch import ConvAlgo  # noqa: E402

from pgov3d_core.models import spconv_compat  # noqa: E402,F401  (CPU backward workaround for Native)


def _coords(n=2500, extent=14, batches=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randint(0, extent, (n, 3), generator=g)
    b = torch.randint(0, batches, (n, 1), generator=g)
    return torch.unique(torch.cat([b, xyz], 1), dim=0).int()


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def _sorted_rows(indices):
    i = indices.long()
    return torch.argsort(((i[:, 0] * 4096 + i[:, 1]) * 4096 + i[:, 2]) * 4096 + i[:, 3])


def _run_subm(coords, kernel, cin, cout, algo):
    torch.manual_seed(1)
    conv = sp.SubMConv3d(cin, cout, kernel, padding=kernel // 2, bias=False, indice_key="s", algo=ConvAlgo.Native)
    if algo == "torch":
        conv = gc.GatherSubMConv3d(conv, "g_s")
    feats = torch.randn(len(coords), cin, generator=torch.Generator().manual_seed(2)).requires_grad_()
    out = conv(sp.SparseConvTensor(feats, coords, [32, 32, 32], 2)).features
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * up).sum().backward()
    return out.detach(), feats.grad, conv.weight.grad


@pytest.mark.parametrize("kernel,cin,cout", [(3, 16, 16), (3, 40, 24), (5, 3, 8)])
def test_submanifold_conv_matches_spconv_native(kernel, cin, cout):
    coords = _coords()
    ref = _run_subm(coords, kernel, cin, cout, "native")
    got = _run_subm(coords, kernel, cin, cout, "torch")
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) < 1e-5


def _run_down_up(coords, algo):
    torch.manual_seed(1)
    down = sp.SparseConv3d(5, 7, 2, stride=2, bias=False, indice_key="d", algo=ConvAlgo.Native)
    up = sp.SparseInverseConv3d(7, 3, 2, indice_key="d", bias=False, algo=ConvAlgo.Native)
    if algo == "torch":
        down, up = gc.GatherDownConv3d(down, "g_d"), gc.GatherInverseConv3d(up, "g_d")
    feats = torch.randn(len(coords), 5, generator=torch.Generator().manual_seed(2)).requires_grad_()
    coarse = down(sp.SparseConvTensor(feats, coords, [32, 32, 32], 2))
    fine = up(coarse)
    order = _sorted_rows(coarse.indices)  # the two algorithms may list the coarse sites differently
    loss = (fine.features * torch.randn(fine.features.shape, generator=torch.Generator().manual_seed(3))).sum()
    (loss + coarse.features.square().sum()).backward()
    return (coarse.indices[order], coarse.spatial_shape, coarse.features.detach()[order], fine.indices,
            fine.features.detach(), feats.grad, down.weight.grad, up.weight.grad)


def test_downsample_and_inverse_conv_match_spconv_native():
    coords = _coords()
    ref = _run_down_up(coords, "native")
    got = _run_down_up(coords, "torch")
    assert torch.equal(got[0], ref[0])  # the same coarse sites
    assert list(got[1]) == list(ref[1])  # and spatial shape
    assert torch.equal(got[3], coords)  # the inverse lands on the input's sites, in its order
    for a, b in zip(got[2:3] + got[4:], ref[2:3] + ref[4:], strict=True):
        assert _rel(a, b) < 1e-5


def test_kernel_map_pairs_are_exactly_the_neighbours_within_each_cloud():
    coords = _coords(n=400, extent=6, batches=3)
    kmap = gc.submanifold_map(coords, 3)
    c = coords.long()
    pairs = set(zip(kmap.in_idx.tolist(), kmap.out_idx.tolist(), strict=True))
    expected = {(i, o) for o in range(len(c)) for i in range(len(c))
                if c[i, 0] == c[o, 0] and (c[i, 1:] - c[o, 1:]).abs().max() <= 1}
    assert pairs == expected and len(pairs) == kmap.in_idx.numel()  # no pair twice, none across clouds
    # Grouped by offset: every pair of group k is displaced by offset k (x slowest, as the weight).
    offsets = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    group = torch.repeat_interleave(torch.arange(27), torch.tensor(kmap.counts))
    assert torch.equal(c[kmap.in_idx, 1:] - c[kmap.out_idx, 1:], offsets[group])


def test_large_scene_paths_equal_the_small_ones(monkeypatch):
    coords = _coords(n=3000, extent=20)
    feats = torch.randn(len(coords), 8)
    weight = torch.randn(6, 3, 3, 3, 8)
    small = gc.submanifold_map(coords, 3)
    f1 = feats.clone().requires_grad_()
    out1 = gc.gather_conv(f1, weight, small)
    out1.sum().backward()
    # Sorted-key neighbour search (grids too large for memory) and one-offset chunks.
    monkeypatch.setattr(gc, "MAX_GRID_CELLS", 0)
    monkeypatch.setattr(gc, "CHUNK_ELEMENTS", 64)
    large = gc.submanifold_map(coords, 3)
    assert torch.equal(large.in_idx, small.in_idx) and torch.equal(large.out_idx, small.out_idx)
    assert len(gc._chunks(large.counts, 14)) == 27
    f2 = feats.clone().requires_grad_()
    out2 = gc.gather_conv(f2, weight, large)
    out2.sum().backward()
    assert torch.allclose(out2, out1, atol=1e-5) and torch.allclose(f2.grad, f1.grad, atol=1e-5)


def test_backward_computes_no_gradient_for_an_input_that_needs_none(monkeypatch):
    # The network's first convolution reads the points' colours: backward skips their gradient's
    # matmuls and scatter, and the weight's gradient is the same.
    coords = _coords(n=800, extent=10)
    kmap = gc.submanifold_map(coords, 3)
    offsets_used = sum(1 for n in kmap.counts if n)
    feats, up = torch.randn(len(coords), 3), torch.randn(len(coords), 8)
    real_mm, calls = torch.mm, []
    monkeypatch.setattr(torch, "mm", lambda *a, **k: calls.append(1) or real_mm(*a, **k))
    grads = {}
    for needs_input_grad in (True, False):
        x = feats.clone().requires_grad_(needs_input_grad)
        w = torch.randn(8, 3, 3, 3, 3, generator=torch.Generator().manual_seed(4)).requires_grad_()
        out = (gc.gather_conv(x, w, kmap) * up).sum()
        calls.clear()
        out.backward()
        grads[needs_input_grad] = (x.grad, w.grad, len(calls))
    assert grads[True][2] == 2 * offsets_used and grads[False][2] == offsets_used
    assert grads[True][0].abs().sum() > 0 and grads[False][0] is None
    assert torch.equal(grads[False][1], grads[True][1])


def test_a_lone_voxel_and_an_empty_offset_are_fine():
    coords = torch.tensor([[0, 5, 5, 5]], dtype=torch.int32)
    kmap = gc.submanifold_map(coords, 3)
    assert kmap.counts[13] == 1 and sum(kmap.counts) == 1  # only the centre
    w = torch.randn(4, 3, 3, 3, 2)
    x = torch.randn(1, 2)
    assert torch.allclose(gc.gather_conv(x, w, kmap), x @ w[:, 1, 1, 1, :].T)


def test_auto_uses_torch_kernels_on_cpu_and_checkpoints_move_between_algorithms():
    clouds = [voxelize_cloud(*surface_cloud(n, i), 0.05) for i, n in enumerate((1500, 900))]
    batch = collate_clouds(clouds)
    torch.manual_seed(0)
    fast = build_model({"preset": "tiny", "out_channels": 32, "head_channels": 16})
    if not torch.cuda.is_available():
        assert isinstance(fast.stem.conv, gc.GatherSubMConv3d)
    torch.manual_seed(0)
    native = build_model({"preset": "tiny", "out_channels": 32, "head_channels": 16, "algo": "native"})
    assert not isinstance(native.stem.conv, gc.GatherSubMConv3d)
    # The same seed gives the same weights, under the same names.
    a, b = fast.state_dict(), native.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Train one with the torch kernels, load into the other: the same outputs.
    opt = torch.optim.AdamW(fast.parameters(), lr=0.01)
    target = F.normalize(torch.randn(32), dim=0)
    for _ in range(3):
        loss = (1 - fast(batch) @ target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    native.load_state_dict(fast.state_dict())
    fast.eval()
    native.eval()
    with torch.no_grad():
        assert torch.allclose(fast(batch), native(batch), atol=1e-4)


def test_unknown_algorithm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="torch"):
        build_model({"preset": "tiny", "out_channels": 8, "algo": "fastest"})


def test_auto_runs_large_passes_on_spconv_native_with_the_same_result(monkeypatch):
    clouds = [voxelize_cloud(*surface_cloud(n, i), 0.05) for i, n in enumerate((1500, 900))]
    batch = collate_clouds(clouds)
    torch.manual_seed(0)
    model = build_model({"preset": "tiny", "out_channels": 32}).eval()
    if torch.cuda.is_available():
        pytest.skip("auto runs spconv's GPU kernels where CUDA is present")
    calls = []
    native_forward = sp.SubMConv3d.forward
    monkeypatch.setattr(sp.SubMConv3d, "forward", lambda self, x: calls.append(1) or native_forward(self, x))
    with torch.no_grad():
        small = model(batch)
        assert not calls  # within the limit: the torch kernels
        assert model.backend.gather_max_voxels == gc.AUTO_MAX_VOXELS >= batch.num_voxels
        model.backend.gather_max_voxels = batch.num_voxels - 1  # as if the pass were larger than the limit
        large = model(batch)
    assert len(calls) == 13  # every submanifold conv of the tiny U-Net, on Native
    assert torch.allclose(small, large, atol=1e-5)
