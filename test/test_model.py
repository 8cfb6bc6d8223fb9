"""3D backbone: shapes, normalisation, batch independence, CPU gradients, presets, backends and the
spconv CPU workarounds (each checked in both directions: still needed, and still working)."""

import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F
from sparse_clouds import one_torch_thread, surface_cloud  # noqa: F401 (autouse fixture)

from pgov3d_core.models import (
    PRESETS,
    BackendUnavailableError,
    build_model,
    collate_clouds,
    count_parameters,
    resolve_model_config,
    spconv_compat,
    voxelize_cloud,
)
from pgov3d_core.models.backends import (
    MinkowskiBackend,
    SpconvBackend,
    pack_minkowski_input,
    restore_input_order,
    spatial_shape,
)


def _clouds(sizes=(1500, 900), voxel=0.05):
    return [voxelize_cloud(*surface_cloud(n, i), voxel) for i, n in enumerate(sizes)]


def _tiny(out=32, **kw):
    torch.manual_seed(0)
    return build_model({"preset": "tiny", "out_channels": out, **kw})


def test_output_is_per_point_and_unit_norm():
    clouds = _clouds()
    batch = collate_clouds(clouds)
    assert batch.num_points == 2400 and batch.num_voxels < batch.num_points  # several points share voxels
    out = _tiny(48)(batch)
    assert out.shape == (2400, 48)
    assert torch.allclose(out.norm(dim=1), torch.ones(2400), atol=1e-5)
    # Points of one voxel get that voxel's feature.
    same = batch.inverse == batch.inverse[0]
    assert same.sum() > 1 and torch.equal(out[same], out[0].expand(int(same.sum()), -1))
    # inverse None (the training objective's call): one unit row per voxel, the same features.
    per_voxel = dataclasses.replace(batch, inverse=None)
    voxels = _tiny(48)(per_voxel)
    assert voxels.shape == (batch.num_voxels, 48) and per_voxel.num_points == batch.num_voxels
    assert torch.allclose(voxels[batch.inverse], out, atol=1e-6)
    # factored=True (the training objective's call): the head's factors, whose product normalised
    # is the same per-voxel output.
    factors = _tiny(48, head_channels=24)(per_voxel, factored=True)
    assert factors.hidden.shape == (batch.num_voxels, 24) and factors.weight.shape == (48, 24)
    assert torch.allclose(F.normalize(factors.materialise(), dim=1), _tiny(48, head_channels=24)(per_voxel),
                          atol=1e-5)


def test_two_clouds_in_one_batch_equal_each_cloud_alone():
    model = _tiny().eval()
    clouds = _clouds((1700, 1100))
    with torch.no_grad():
        joint = model(collate_clouds(clouds))
        alone = [model(collate_clouds([c])) for c in clouds]
    n0 = clouds[0].num_points
    assert torch.allclose(joint[:n0], alone[0], atol=1e-5)
    assert torch.allclose(joint[n0:], alone[1], atol=1e-5)
    # Order inside the batch does not matter either.
    with torch.no_grad():
        swapped = model(collate_clouds(clouds[::-1]))
    assert torch.allclose(swapped[: clouds[1].num_points], alone[1], atol=1e-5)


def test_gradients_reach_every_parameter_on_cpu():
    model = _tiny().train()
    batch = collate_clouds(_clouds())
    out = model(batch)
    target = F.normalize(torch.randn(32), dim=0)
    (1 - out @ target).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    conv_grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.endswith("conv1.weight")]
    assert conv_grads and all(g > 0 for g in conv_grads)


def test_a_few_steps_fit_a_colour_rule():
    """End-to-end CPU learning sanity: colour → one of two directions."""
    model = _tiny(8)
    pts, rgb = surface_cloud(1200, 3)
    cls = (rgb[:, 0] > 0.5).long()
    rgb = torch.stack([cls.float()] * 3, dim=1)
    batch = collate_clouds([voxelize_cloud(pts, rgb * 2 - 1, 0.02)])
    text = torch.eye(8)[:2]
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(30):
        loss = (1 - (model(batch) * text[cls]).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = ((model(batch) @ text.T).argmax(1) == cls).float().mean()
    assert acc > 0.95


def test_odd_extents_do_not_drop_voxels_when_downsampling():
    assert spatial_shape(torch.tensor([[0, 4, 0, 7]]), 8) == [8, 8, 8]
    assert spatial_shape(torch.tensor([[0, 8, 1, 2]]), 8) == [16, 8, 8]
    # A cloud whose extent is odd at every level still gets a finite output for every point.
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.42, 0.0, 0.0], [0.84, 0.0, 0.0], [0.0, 0.42, 0.0]])
    out = _tiny().eval()(collate_clouds([voxelize_cloud(pts, torch.rand(4, 3), 0.1)]))
    assert out.shape == (4, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("algo", ["auto", "native"])
def test_an_empty_batch_is_a_clear_error(algo):
    model = _tiny(algo=algo).eval()
    empty = collate_clouds([voxelize_cloud(torch.zeros((0, 3)), torch.zeros((0, 3)), 0.05)])
    with pytest.raises(ValueError, match="empty SparseBatch: no voxels"):
        model(empty)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_and_run(preset):
    torch.manual_seed(0)
    model = build_model({"preset": preset, "out_channels": 16, "in_channels": 6}).eval()
    pts, rgb = surface_cloud(600, 1, extent=1.0)
    batch = collate_clouds([voxelize_cloud(pts, torch.cat([rgb, rgb], 1), 0.05)])
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (600, 16) and torch.isfinite(out).all()
    full = resolve_model_config({"preset": preset, "out_channels": 16})
    assert len(model.down) == len(full["enc_channels"])


def test_preset_sizes_are_in_the_expected_families():
    # MinkUNet18A (OpenScene) has ~22 M parameters with a 768-d head; SparseUNet16 < SparseUNet32.
    assert 20e6 < count_parameters(build_model({"preset": "minkunet18a", "out_channels": 768})) < 25e6
    small = count_parameters(build_model({"preset": "sparseunet16", "out_channels": 512}))
    large = count_parameters(build_model({"preset": "sparseunet32", "out_channels": 512}))
    assert small < large
    assert count_parameters(build_model({"preset": "tiny", "out_channels": 64})) < 1e6


def test_config_errors_are_explicit():
    with pytest.raises(ValueError, match="preset"):
        build_model({"preset": "resnet", "out_channels": 8})
    with pytest.raises(ValueError, match="backend"):
        build_model({"backend": "torchsparse", "out_channels": 8})
    with pytest.raises(ValueError, match="out_channels"):
        build_model({"preset": "tiny"})
    with pytest.raises(ValueError, match="unknown model config"):
        build_model({"preset": "tiny", "out_channels": 8, "widths": [1]})
    with pytest.raises(ValueError, match="same non-zero length"):
        build_model({"preset": "tiny", "out_channels": 8, "enc_depths": [1, 1]})
    # Explicit keys override the preset.
    m = build_model({"preset": "tiny", "out_channels": 8, "enc_channels": [8, 16, 24]})
    assert [d.conv.out_channels for d in m.down] == [8, 16, 24]


def test_hidden_head_layer_lifts_the_output_out_of_the_last_widths_subspace():
    """A linear head puts every voxel feature in an affine subspace of dimension dec_channels[-1]
    (16 in the tiny preset) of the text space, so at most 17 directions are reachable however long it
    trains; head_channels adds a pointwise layer whose ReLU lifts the output out of that subspace."""
    batch = collate_clouds(_clouds((3000, 2000)))

    def centred_rank(model):
        with torch.no_grad():
            v = model.eval().forward_voxels(batch)
        return int(torch.linalg.matrix_rank(v - v.mean(0), rtol=1e-4))

    linear = _tiny(64)
    full = resolve_model_config({"preset": "tiny", "out_channels": 64})
    assert linear.head_hidden is None and full["head_channels"] == 0
    assert centred_rank(linear) <= 16
    hidden = _tiny(64, head_channels=48)
    assert hidden.head.in_features == 48
    assert centred_rank(hidden) > 16
    with pytest.raises(ValueError, match="head_channels"):
        _tiny(64, head_channels=-1)
    # A model config without the key (checkpoints written before it existed) loads as a linear head.
    stored = {k: v for k, v in full.items() if k != "head_channels"}
    build_model(stored).load_state_dict(linear.state_dict())


# ------------------------------------------------------------------------- MinkowskiEngine adapter


def test_minkowski_backend_missing_names_the_backend():
    try:
        import MinkowskiEngine  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("MinkowskiEngine is installed here")
    with pytest.raises(BackendUnavailableError, match="MinkowskiEngine") as info:
        build_model({"preset": "tiny", "backend": "minkowski", "out_channels": 8})
    assert "model.backend" in str(info.value)


def test_minkowski_input_packing_and_row_order():
    assert not MinkowskiBackend.__abstractmethods__ and not SpconvBackend.__abstractmethods__
    batch = collate_clouds(_clouds((50, 30)))
    batch.coords = batch.coords.to(torch.int64)  # any integer dtype in, int32 out
    coords, feats = pack_minkowski_input(batch)
    assert coords.dtype == torch.int32 and coords.is_contiguous() and coords.shape == (batch.num_voxels, 4)
    assert torch.equal(coords[:, 0].unique(), torch.tensor([0, 1], dtype=torch.int32))  # batch index first
    assert torch.equal(coords.long(), batch.coords) and feats.dtype == torch.float32 and torch.equal(feats, batch.feats)
    # ME keeps rows in its own order; inverse_mapping[i] is input row i's row there.
    perm = torch.randperm(batch.num_voxels)
    me_rows = batch.feats[perm]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(batch.num_voxels)
    assert torch.equal(restore_input_order(me_rows, inverse), batch.feats)
    batch.coords = batch.coords[:, :3]
    with pytest.raises(ValueError, match=r"\(M, 4\)"):
        pack_minkowski_input(batch)


# ------------------------------------------------------------------------- spconv CPU workarounds


def _subm_backward_on_cpu():
    import spconv.pytorch as spconv
    from spconv.pytorch import ConvAlgo

    coords = torch.unique(torch.randint(0, 8, (60, 3)), dim=0)
    idx = torch.cat([torch.zeros((len(coords), 1), dtype=torch.int64), coords], 1).int()
    feats = torch.rand(len(coords), 4, requires_grad=True)
    conv = spconv.SubMConv3d(4, 4, 3, algo=ConvAlgo.Native)
    conv(spconv.SparseConvTensor(feats, idx, [8, 8, 8], 1)).features.sum().backward()
    return feats.grad


@pytest.mark.skipif(torch.cuda.is_available(), reason="the stream bug only shows without CUDA")
def test_stream_workaround_is_still_needed_and_works():
    assert spconv_compat.is_installed()
    spconv_compat.uninstall()
    try:
        with pytest.raises(RuntimeError, match="NVIDIA driver"):
            _subm_backward_on_cpu()  # if this passes, spconv fixed its CPU backward: drop bug 1 of spconv_compat
    finally:
        spconv_compat.install()
    assert spconv_compat.is_installed()
    grad = _subm_backward_on_cpu()
    assert grad is not None and torch.isfinite(grad).all()


def _dense_reference(coords, feats, weight, k):
    """Submanifold conv via dense conv3d: same kernel (spconv KRSC weight (out, k, k, k, in))."""
    size = int(coords.max()) + 1
    dense = torch.zeros(1, feats.shape[1], size, size, size)
    dense[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.T
    out = F.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=k // 2)
    return out[0][:, coords[:, 0], coords[:, 1], coords[:, 2]].T


def _spconv_vs_dense(k: int = 5, channels: int = 16):
    import spconv.pytorch as spconv
    from spconv.pytorch import ConvAlgo

    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 24, (5000, 3), generator=g), dim=0)
    idx = torch.cat([torch.zeros((len(coords), 1), dtype=torch.int64), coords], 1).int()
    feats = torch.rand(len(coords), channels, generator=g)
    conv = spconv.SubMConv3d(channels, channels, k, padding=k // 2, bias=False, algo=ConvAlgo.Native)
    f1 = feats.clone().requires_grad_(True)
    out = conv(spconv.SparseConvTensor(f1, idx, [24, 24, 24], 1)).features
    f2 = feats.clone().requires_grad_(True)
    ref = _dense_reference(coords, f2, conv.weight.detach(), k)
    up = torch.rand(out.shape, generator=g)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    return (out - ref).abs().max().item(), (f1.grad - f2.grad).abs().max().item()


# Whether spconv's scatter_add_cpu still races depends on thread timing (two OpenMP threads
# colliding on a row within 60 trials): on a loaded or single-core machine it may not show, so the
# "still needed" canary is an opt-in check (PGOV3D_CANARIES=1), not part of the suite's verdict.
CANARIES = os.environ.get("PGOV3D_CANARIES") == "1"


@pytest.mark.skipif(not CANARIES, reason="timing-dependent canary: set PGOV3D_CANARIES=1 to run it")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the scatter-add race needs two OpenMP threads")
def test_scatter_add_race_is_still_there_without_the_workaround():
    torch.set_num_threads(2)
    from spconv.core_cc.csrc.sparse.all import SpconvOps
    from spconv.pytorch.cppcore import torch_tensor_to_tv

    # Unpatched kernel, 2 threads: shared row pointers make some rows land on wrong outputs.
    wrong = 0
    for trial in range(60):
        g = torch.Generator().manual_seed(trial)
        idx = torch.randperm(20000, generator=g)[:5000].int()
        out, vals = torch.zeros(20000, 64), torch.rand(5000, 64, generator=g)
        SpconvOps.scatter_add_cpu(torch_tensor_to_tv(out), torch_tensor_to_tv(vals), torch_tensor_to_tv(idx))
        ref = torch.zeros(20000, 64).index_add_(0, idx.long(), vals)
        wrong += int(not torch.equal(out, ref))
        if wrong:
            break
    assert wrong, "spconv's scatter_add_cpu no longer races: drop bug 2 of spconv_compat"


def test_scatter_add_race_workaround_works_with_two_threads():
    # Patched: a 5x5x5 submanifold conv equals the dense reference, forward and backward, with
    # two threads (the setting where the unpatched kernel races).
    torch.set_num_threads(2)
    assert spconv_compat.is_installed()
    fwd_err, bwd_err = _spconv_vs_dense()
    assert fwd_err < 1e-4 and bwd_err < 1e-4


def test_inference_keeps_a_floor_near_z0_in_one_voxel_layer():
    """The predictor's voxel layers are centred on z = 0: a floor within a millimetre of z = 0 (a map's
    voxel means, a real scan) is one layer, so points just above and just below it get one feature;
    a surface at a layer boundary (z = 0.05 here) still splits."""
    from pgov3d_core.inference import GRID_Z_SHIFT_VOXELS, PointFeaturePredictor

    assert GRID_Z_SHIFT_VOXELS == 0.5
    g = torch.Generator().manual_seed(0)
    xy = torch.rand((4000, 2), generator=g) * 2.0
    rgb = torch.rand((4000, 3), generator=g) * 255
    predictor = PointFeaturePredictor(_tiny(16).eval(), 0.1, torch.device("cpu"))
    for z0, one_layer in ((0.0, True), (-0.02, True), (0.05, False)):
        z = z0 + torch.where(torch.arange(4000) % 2 == 0, 3e-4, -3e-4)  # +-0.3 mm, alternating
        feats = predictor.features(torch.cat([xy, z[:, None]], 1), rgb)
        up = predictor.features(torch.cat([xy, torch.full((4000, 1), z0 + 3e-4)], 1), rgb)
        assert torch.allclose(feats, up, atol=1e-5) is one_layer
