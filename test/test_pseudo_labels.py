"""Stage 2 pseudo-labels with a stub model of known outputs."""

import numpy as np
import pytest
import torch

from pgov3d_core.training.pseudo_labels import (
    PseudoLabels,
    cache_path,
    load_pseudo_labels,
    pseudo_label_points,
    repeated_sampling_probabilities,
    save_pseudo_labels,
    scene_vocabulary,
)


def test_scene_vocabulary_normalises_and_orders():
    vocab = scene_vocabulary([["Chairs", "a table", "wall"], ["chair", "Wall ", "the lamps"], ["chair"]])
    assert vocab == ["chair", "wall", "lamp", "table"]


def grid_cloud(n_side=6, per_voxel=3, voxel=0.1):
    """n_side^3 voxels with `per_voxel` points each, point i in voxel i // per_voxel."""
    g = torch.stack(torch.meshgrid(*(torch.arange(n_side),) * 3, indexing="ij"), -1).reshape(-1, 3).float()
    centres = (g + 0.5) * voxel
    jitter = torch.linspace(-0.03, 0.03, per_voxel)[:, None].expand(per_voxel, 3)
    return (centres[:, None, :] + jitter[None]).reshape(-1, 3)


def test_every_point_gets_probabilities_averaged_over_its_passes():
    xyz = grid_cloud()
    text = torch.eye(3)
    calls = []

    def stub(idx, angle):
        # Points of even voxels look like text 0; odd voxels: like text 1 in one pass, text 2 in
        # the next (so their average is split); the subset is recorded.
        calls.append(idx.clone())
        voxel = idx // 3
        feats = torch.zeros(len(idx), 3)
        feats[voxel % 2 == 0, 0] = 1.0
        odd = voxel % 2 == 1
        feats[odd, 1 + (len(calls) % 2)] = 1.0
        return feats

    pl = pseudo_label_points(stub, xyz, text, ["a", "b", "c"], voxel_size=0.1, temperature=0.01,
                             confidence_threshold=0.6, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 3  # 3 points per voxel → 3 passes to cover all
    for idx in calls:  # one point per voxel per pass
        assert torch.equal(torch.sort(idx // 3).values, torch.arange(216))
    assert (pl.passes == 1).all()
    even = (np.arange(len(xyz)) // 3) % 2 == 0
    assert (pl.labels[even] == 0).all() and np.allclose(pl.confidence[even], 1.0, atol=1e-4)
    # Odd voxels: each point seen once, in a pass that said b or c: confident single votes.
    assert set(pl.labels[~even].tolist()) <= {1, 2}


def test_no_sampling_is_one_unturned_pass_over_every_point():
    """voxel_size=None (the §3.2 ablation): the network sees the whole cloud once, as it lies."""
    xyz = grid_cloud(n_side=3, per_voxel=4)
    calls = []

    def stub(idx, angle):
        calls.append((idx.clone(), angle))
        feats = torch.zeros(len(idx), 2)
        feats[torch.arange(len(idx)), (idx % 2)] = 1.0  # even points text 0, odd points text 1
        return feats

    pl = pseudo_label_points(stub, xyz, torch.eye(2), ["a", "b"], voxel_size=None, min_passes=5, max_passes=9,
                             generator=torch.Generator().manual_seed(0), rotate_z=True)
    assert len(calls) == 1
    idx, angle = calls[0]
    assert torch.equal(idx, torch.arange(len(xyz))) and angle == 0.0
    assert (pl.passes == 1).all()
    assert np.array_equal(pl.labels, np.arange(len(xyz)) % 2)


def test_averaging_and_threshold_with_repeated_passes():
    xyz = grid_cloud(n_side=2, per_voxel=1)  # one point per voxel: every pass keeps every point
    text = torch.eye(2)
    state = {"k": 0}

    def stub(idx, angle):
        state["k"] += 1
        feats = torch.zeros(len(idx), 2)
        feats[:, 0 if state["k"] <= 3 else 1] = 1.0  # 3 passes say a, 1 pass says b
        feats[idx == 0] = torch.tensor([1.0, 1.0])  # point 0 always undecided
        return feats

    pl = pseudo_label_points(stub, xyz, text, ["a", "b"], voxel_size=0.1, min_passes=4, temperature=0.01,
                             confidence_threshold=0.7, generator=torch.Generator().manual_seed(1))
    assert (pl.passes == 4).all()
    np.testing.assert_allclose(pl.confidence[1:], 0.75, atol=1e-4)
    assert (pl.labels[1:] == 0).all()
    assert pl.labels[0] == -1 and pl.confidence[0] == pytest.approx(0.5)


def test_several_text_sets_share_the_passes_and_every_point_is_covered():
    # Evaluation scores the class names and the query texts from the same network passes; with no
    # max_passes every point is kept at least once (so none falls back to a default class).
    xyz = grid_cloud(n_side=3, per_voxel=4)
    torch.manual_seed(0)
    feats_of_point = torch.randn(len(xyz), 5)
    calls = []

    def stub(idx, angle):
        calls.append(len(idx))
        return feats_of_point[idx]

    names, queries = torch.randn(3, 5), torch.randn(4, 5)
    (p_names, p_queries), passes = repeated_sampling_probabilities(
        stub, xyz, [names, queries], voxel_size=0.1, temperature=0.1, min_passes=6,
        generator=torch.Generator().manual_seed(2))
    assert len(calls) == 6 and (passes >= 1).all() and int(passes.sum()) == sum(calls)
    assert p_names.shape == (len(xyz), 3) and p_queries.shape == (len(xyz), 4)
    # A point's features do not depend on the pass here, so its average is its one distribution.
    for text, probs in ((names, p_names), (queries, p_queries)):
        expected = torch.softmax(torch.nn.functional.normalize(feats_of_point, dim=1)
                                 @ torch.nn.functional.normalize(text, dim=1).T / 0.1, dim=1)
        torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    with_one, _ = repeated_sampling_probabilities(stub, xyz, [queries], voxel_size=0.1, temperature=0.1, min_passes=6,
                                                  generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(with_one[0], p_queries)


def test_rotated_passes_draw_their_own_angle_and_turn_the_subset_rigidly():
    from pgov3d_core.geometry import turned

    xyz = grid_cloud(n_side=2, per_voxel=1)
    angles = {True: [], False: []}
    for rotate in (True, False):
        def stub(idx, angle, rotate=rotate):
            angles[rotate].append(angle)
            return torch.ones(len(idx), 2)

        pseudo_label_points(stub, xyz, torch.eye(2), ["a", "b"], voxel_size=0.1, min_passes=5,
                            generator=torch.Generator().manual_seed(3), rotate_z=rotate)
    assert angles[False] == [0.0] * 5
    assert len(set(angles[True])) == 5 and all(0.0 <= a < 2 * np.pi for a in angles[True])
    # The subset turns about its centroid's vertical axis: heights, centroid and distances stay.
    pts = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) * 4
    out = turned(pts, 1.1)
    torch.testing.assert_close(out[:, 2], pts[:, 2])
    torch.testing.assert_close(out.mean(0), pts.mean(0), atol=1e-5, rtol=0)
    def dist(p):
        return (p[:, None] - p[None]).norm(dim=-1)
    torch.testing.assert_close(dist(out), dist(pts), atol=1e-4, rtol=0)
    assert not torch.allclose(out, pts) and turned(pts, 0.0) is pts


def test_empty_vocabulary_and_mismatch_are_errors():
    with pytest.raises(ValueError, match="empty scene vocabulary"):
        pseudo_label_points(lambda i, a: torch.zeros(len(i), 2), torch.zeros(3, 3), torch.zeros(0, 2), [])
    with pytest.raises(ValueError, match="2 vocabulary entries but 3"):
        pseudo_label_points(lambda i, a: torch.zeros(len(i), 2), torch.zeros(3, 3), torch.zeros(3, 2), ["a", "b"])


def test_cache_round_trip_and_stale_or_corrupt_files(tmp_path, caplog):
    pl = PseudoLabels(np.array([0, -1, 1]), np.array([0.9, 0.2, 0.8], np.float32), np.array([1, 1, 2], np.int32),
                      ["chair", "table"])
    path = cache_path(tmp_path, "stage1")
    save_pseudo_labels(path, pl)
    back = load_pseudo_labels(path, n_points=3, vocabulary=["chair", "table"])
    assert back.vocabulary == ["chair", "table"] and np.array_equal(back.labels, pl.labels)
    assert load_pseudo_labels(path, n_points=4) is None and "4-point cloud" in caplog.text
    assert load_pseudo_labels(path, vocabulary=["chair"]) is None and "vocabulary changed" in caplog.text
    path.write_bytes(path.read_bytes()[:40])
    assert load_pseudo_labels(path) is None and "unreadable" in caplog.text
    assert load_pseudo_labels(tmp_path / "missing.npz") is None
