"""Feature storage modes and query kernels of VoxelMap (query_kernels): same labels in every
storage mode and kernel on a small map, the compact int8 mode within its stated agreement,
save/load across modes, the point cap, and the PointCloud2 build. Timing goals live in
bench/bench_map.py, not here."""

import numpy as np
import pytest
import torch

from pgov3d_core import query_kernels as qk
from pgov3d_core.map import QueryResult, VoxelMap, select_points


def grid_map(n: int, mode: str) -> VoxelMap:
    side = int(np.ceil(n ** (1 / 3)))
    grid = torch.stack(torch.meshgrid(*(torch.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    vmap = VoxelMap(voxel_size=0.1, max_voxels=n, feature_dtype=mode)
    vmap.integrate_points((grid.float() + 0.5) * 0.1, torch.zeros(n, 3))
    return vmap


def clustered_features(n: int, d: int, q: int, noise: float, seed: int = 0):
    """Voxels near one of q random unit 'text' directions: a trained map in miniature."""
    g = torch.Generator().manual_seed(seed)
    texts = torch.nn.functional.normalize(torch.randn(q, d, generator=g), dim=1)
    cls = torch.randint(0, q, (n,), generator=g)
    return texts[cls] + noise * torch.randn(n, d, generator=g) / d**0.5, texts


def test_labels_identical_across_storage_modes_and_kernels():
    n, d, q = 3000, 64, 7
    feats, texts = clustered_features(n, d, q, noise=1.0)
    ref = torch.nn.functional.normalize(feats, dim=1) @ texts.T
    top2 = ref.topk(2, dim=1).values
    # Ties closer than 16-bit rounding could flip: the clusters are kept apart by construction.
    assert float((top2[:, 0] - top2[:, 1]).min()) > 0.02
    expected = ref.argmax(1)
    for mode in ("float32", "float16", "bfloat16"):
        vmap = grid_map(n, mode)
        vmap.set_features(torch.arange(n - 1), feats[: n - 1])  # the last voxel has no feature
        assert vmap.feature_storage == mode and vmap.features.dtype == qk.STORAGE_DTYPES[mode]
        for kernel in qk.kernels_for(mode):
            for chunk in (256, 1000, 4096):  # chunks that do and do not divide the map
                res = vmap.query(texts, kernel=kernel, chunk=chunk)
                assert torch.equal(res.labels[: n - 1], expected[: n - 1]), (mode, kernel, chunk)
                assert int(res.labels[-1]) == -1 and torch.isnan(res.scores[-1])
                np.testing.assert_allclose(res.scores[: n - 1].numpy(), ref.max(1).values[: n - 1].numpy(), atol=1e-2)
                np.testing.assert_allclose(res.best_scores.numpy(), ref[: n - 1].max(0).values.numpy(), atol=1e-2)
        default = vmap.query(texts)  # the measured kernel choice
        assert torch.equal(default.labels[: n - 1], expected[: n - 1])


def test_best_scores_ignore_voxels_without_features():
    # Every text scores negative on the featured voxels; a featureless (zero) row would say 0.
    vmap = grid_map(10, "float16")
    vmap.set_features(torch.arange(5), -torch.ones(5, 4))
    for kernel in qk.kernels_for("float16"):
        res = vmap.query(torch.eye(4)[:2], kernel=kernel, chunk=4)
        np.testing.assert_allclose(res.best_scores.numpy(), [-0.5, -0.5], rtol=1e-3)


def test_compact_int8_within_stated_agreement():
    """The compact mode's stated cost: top-1 agreement with float32 >= 99.5 % (bench_map.py
    measures it at 1M voxels x 512-d on harder, trained-like features)."""
    n, d, q = 20000, 128, 20
    feats, texts = clustered_features(n, d, q, noise=3.0, seed=1)
    ref = grid_map(n, "float32")
    ref.set_features(torch.arange(n), feats)
    expected = ref.query(texts).labels
    compact = grid_map(n, "int8")
    compact.set_features(torch.arange(n), feats)
    assert compact.bytes_per_voxel(True) == ref.bytes_per_voxel(False) + d + 1 + 4
    for kernel in qk.kernels_for("int8"):
        res = compact.query(texts, kernel=kernel, chunk=4096)
        agreement = float((res.labels == expected).float().mean())
        assert agreement >= 0.995, (kernel, agreement)
        np.testing.assert_allclose(res.scores.numpy(), ref.query(texts).scores.numpy(), atol=0.02)


@pytest.mark.parametrize("saved,loaded", [("int8", None), ("int8", "float32"), ("float16", "int8"),
                                          ("bfloat16", "float16")])
def test_save_load_across_storage_modes(tmp_path, saved, loaded):
    n = 500
    feats, texts = clustered_features(n, 16, 3, noise=0.5)
    vmap = grid_map(n, saved)
    vmap.set_features(torch.arange(n - 10), feats[: n - 10])
    path = vmap.save(tmp_path / "m.npz")
    again = VoxelMap.load(path) if loaded is None else VoxelMap.load(path, feature_dtype=loaded)
    assert again.feature_storage == (loaded or saved)  # a compact map stays compact by default
    if loaded is None:
        assert np.array_equal(again.state_dict()["features"], vmap.state_dict()["features"])
        assert np.array_equal(again.state_dict()["feature_scale"], vmap.state_dict()["feature_scale"])
    assert torch.equal(again.query(texts).labels, vmap.query(texts).labels)
    # Featureless rows stay featureless and new voxels get zero features in every mode.
    assert not bool(again.has_feature()[-10:].any())


def test_auto_storage_is_a_measured_16_bit_type():
    vmap = grid_map(8, "auto")
    assert vmap.feature_storage == "auto" and vmap.feature_dtype is None
    vmap.set_features(torch.arange(8), torch.randn(8, 32))
    assert vmap.feature_storage in ("float16", "bfloat16")
    assert vmap.feature_storage == qk.choose_storage(32)  # one choice per process
    with pytest.raises(ValueError, match="feature storage must be one of"):
        VoxelMap(feature_dtype="int4")
    with pytest.raises(ValueError, match="does not apply"):
        vmap.query(torch.randn(2, 32), kernel="i8mm", chunk=8)


def test_select_points_caps_with_equal_shares():
    labels = torch.tensor([0] * 100 + [1] * 3 + [-1] * 50 + [2] * 40)
    scores = torch.rand(len(labels), generator=torch.Generator().manual_seed(0))
    res = QueryResult(labels, scores, torch.zeros(3))
    assert torch.equal(select_points(res, 0), torch.arange(len(labels)))  # 0 = all, as before
    assert torch.equal(select_points(res, 10_000), torch.arange(len(labels)))
    rows = select_points(res, 30)
    assert len(rows) == 30 and bool((rows[1:] > rows[:-1]).all())
    assert torch.bincount(labels[rows] + 1, minlength=4).tolist() == [0, 14, 3, 13]  # query 1 keeps all 3
    kept0 = rows[labels[rows] == 0]
    assert float(scores[kept0].min()) >= float(scores[labels == 0].topk(14).values.min())  # the best ones
    rows = select_points(res, 150)  # labelled points all fit: the rest is unlabelled context
    assert torch.bincount(labels[rows] + 1, minlength=4).tolist() == [7, 100, 3, 40]
    with pytest.raises(ValueError, match="max_points"):
        select_points(res, -1)


def test_kernel_with_wrong_scores_is_never_chosen(monkeypatch):
    """Speed never outranks correctness: a kernel whose scores stray from float32 on the sample
    block (as _int_mm does on AVX2 without VNNI, by int16 saturation) is not a candidate."""
    monkeypatch.setitem(qk._TOLERANCE, "i8mm", -1.0)
    d = 24  # a dimension no other test uses, so the cached choice is this test's alone
    assert all(kernel != "i8mm" for kernel, _ in qk.kernel_timings("int8", d, 3))
    assert qk.choose_kernel("int8", d, 3)[0] in ("f32_nt", "f32_tn")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_kernel_equals_the_float32_product_of_the_stored_values(dtype, threads):
    """The fused CPU kernel decodes the stored bits itself (bf16 by shift, fp16 by rebias,
    subnormals included): its scores are the float32 product of the stored values, its labels the
    argmax, its best-per-text over featured rows only, whatever the split over threads."""
    from pgov3d_core import fused_query

    assert fused_query.available()
    gen = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(1001, 96, generator=gen), dim=1)
    feats[7] *= 1e-4  # components around 1e-5: float16 subnormals
    values = feats.to(dtype)
    assert dtype != torch.float16 or bool(((values[7].abs() < 6.1e-5) & (values[7] != 0)).any())
    texts = torch.nn.functional.normalize(torch.randn(5, 96, generator=gen), dim=1)
    has = torch.ones(1001, dtype=torch.bool)
    has[::10] = False
    ref = values.float() @ texts.T
    scores, labels, best = fused_query.scan(values, has, texts, threads)
    np.testing.assert_allclose(scores.numpy(), ref.max(1).values.numpy(), atol=2e-6, rtol=0)
    assert torch.equal(labels, ref.argmax(1))
    np.testing.assert_allclose(best.numpy(), ref[has].max(0).values.numpy(), atol=2e-6, rtol=0)
    np.testing.assert_allclose(float(scores[7]), float(ref[7].max()), rtol=1e-5, atol=0)
