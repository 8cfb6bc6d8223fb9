"""Paper Eq. 2–5 losses against hand-computed values, including the degenerate sets."""

import math

import pytest
import torch

from pgov3d_core.losses import (
    DEFAULT_LAMBDA,
    alignment_loss,
    consistency_loss,
    cosine,
    pgov3d_loss,
    total_loss,
)

# Three 2-D text embeddings and four points; cosines are easy to write down by hand.
TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_cosine_is_eq3_for_unnormalised_vectors():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[6.0, 8.0], [0.0, 2.0]])
    assert torch.allclose(cosine(a, b), torch.tensor([1.0, 0.0]))


def test_alignment_matches_hand_computed_value():
    feats = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, 1, -1])  # last point unlabelled: excluded
    # cos: point0·text0 = 1, point1·text1 = 1/√2, point2·text1 = -1
    expected = ((1 - 1.0) + (1 - 1 / math.sqrt(2)) + (1 - (-1.0))) / 3
    assert alignment_loss(feats, labels, TEXT).item() == pytest.approx(expected, abs=1e-6)


def test_alignment_ignores_unlabelled_points_entirely():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    base = alignment_loss(feats[:1], torch.tensor([0]), TEXT)
    with_unlabelled = alignment_loss(feats, torch.tensor([0, -1]), TEXT)
    assert with_unlabelled.item() == pytest.approx(base.item(), abs=1e-7) == pytest.approx(0.0, abs=1e-7)


def test_consistency_matches_hand_computed_value():
    fa = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    fb = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    # S = 1, 1/√2, -1  →  L = 1 − (1 + 1/√2 − 1)/3
    expected = 1 - (1 + 1 / math.sqrt(2) - 1) / 3
    assert consistency_loss(fa, fb).item() == pytest.approx(expected, abs=1e-6)


def test_total_is_eq5_with_default_lambda():
    assert DEFAULT_LAMBDA == 0.2
    assert total_loss(torch.tensor(0.5), torch.tensor(0.25)).item() == pytest.approx(0.5 + 0.2 * 0.25)
    assert total_loss(torch.tensor(0.5), torch.tensor(0.25), lam=0.0).item() == pytest.approx(0.5)


def test_pgov3d_loss_combines_terms_over_pairs_of_rows():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, -1, 2])
    pairs = torch.tensor([[0, 3], [1, 2]])  # S = 1 and 1/√2
    terms = pgov3d_loss(feats, labels, TEXT, pairs, lam=0.2)
    align = ((1 - 1) + (1 - 0) + (1 - 1 / math.sqrt(2))) / 3
    cons = 1 - (1 + 1 / math.sqrt(2)) / 2
    assert terms.alignment.item() == pytest.approx(align, abs=1e-6)
    assert terms.consistency.item() == pytest.approx(cons, abs=1e-6)
    assert terms.total.item() == pytest.approx(align + 0.2 * cons, abs=1e-6)
    terms.total.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0
    assert terms.scalars() == pytest.approx({"loss": align + 0.2 * cons, "alignment": align, "consistency": cons})


@pytest.mark.parametrize("pairs", [None, torch.zeros((0, 2), dtype=torch.int64)])
def test_empty_pair_set_contributes_zero_and_keeps_gradients_finite(pairs):
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    terms = pgov3d_loss(feats, torch.tensor([1, 1]), TEXT, pairs)
    assert terms.consistency.item() == 0.0
    assert terms.total.item() == pytest.approx(terms.alignment.item()) == pytest.approx(0.5)
    terms.total.backward()
    assert torch.isfinite(feats.grad).all()
    empty = torch.zeros((0, 2), requires_grad=True)
    c = consistency_loss(empty, empty * 2)
    c.backward()
    assert c.item() == 0.0 and torch.isfinite(c) and empty.grad is not None


def test_no_labelled_points_gives_zero_alignment_and_finite_gradients():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    text = TEXT.clone().requires_grad_(True)
    loss = alignment_loss(feats, torch.tensor([-1, -1]), text)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(feats.grad, torch.zeros_like(feats)) and torch.equal(text.grad, torch.zeros_like(text))
    # No points at all, and no labelled points plus no pairs: still a defined, finite zero.
    none = torch.zeros((0, 2), requires_grad=True)
    terms = pgov3d_loss(none, torch.zeros(0, dtype=torch.int64), TEXT, None)
    terms.total.backward()
    assert terms.total.item() == 0.0 and none.grad is not None


def test_zero_feature_vectors_do_not_produce_nan():
    feats = torch.zeros((2, 2), requires_grad=True)
    terms = pgov3d_loss(feats, torch.tensor([0, 1]), TEXT, torch.tensor([[0, 1]]))
    terms.total.backward()
    assert torch.isfinite(terms.total) and torch.isfinite(feats.grad).all()
    assert terms.alignment.item() == pytest.approx(1.0) and terms.consistency.item() == pytest.approx(1.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="labels for"):
        alignment_loss(torch.zeros((3, 2)), torch.tensor([0, 1]), TEXT)
    with pytest.raises(ValueError, match="no text embedding"):
        alignment_loss(torch.ones((1, 2)), torch.tensor([3]), TEXT)
    with pytest.raises(ValueError, match="differ in shape"):
        consistency_loss(torch.ones((2, 2)), torch.ones((3, 2)))


def test_voxel_form_equals_the_per_point_loss_and_its_gradient():
    """pgov3d_loss_voxels(voxel features, inverse, ...) is pgov3d_loss of voxel_features[inverse]
    (several points per voxel, unlabelled points, pairs across voxels): same terms, same gradient."""
    from pgov3d_core.losses import pgov3d_loss_voxels

    g = torch.Generator().manual_seed(0)
    vox = torch.randn(40, 8, generator=g)
    inverse = torch.randint(0, 40, (300,), generator=g)
    labels = torch.randint(-1, 5, (300,), generator=g)
    text = torch.randn(5, 8, generator=g)
    pairs = torch.randint(0, 300, (50, 2), generator=g)
    a = vox.clone().requires_grad_(True)
    ref = pgov3d_loss(torch.nn.functional.normalize(a, dim=1)[inverse], labels, text, pairs, lam=0.2)
    ref.total.backward()
    b = vox.clone().requires_grad_(True)
    got = pgov3d_loss_voxels(b, inverse, labels, text, pairs, lam=0.2)
    got.total.backward()
    for x, y in ((got.total, ref.total), (got.alignment, ref.alignment), (got.consistency, ref.consistency)):
        assert torch.allclose(x, y, atol=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    empty = pgov3d_loss_voxels(vox.clone().requires_grad_(True), inverse, torch.full((300,), -1), text, None)
    assert float(empty.total) == 0.0
    with pytest.raises(ValueError, match="labels for"):
        pgov3d_loss_voxels(vox, inverse, labels[:10], text)


@pytest.mark.parametrize("bias", [True, False])
def test_head_factor_form_equals_the_materialised_features_and_their_gradient(bias):
    """pgov3d_loss_voxels(LinearFeatures(h, W, b), ...) is pgov3d_loss_voxels(h Wᵀ + b, ...): the same
    terms and the same gradients for h, W and b, with pairs, unlabelled points and class balance."""
    from pgov3d_core.losses import LinearFeatures, pgov3d_loss_voxels

    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(40, 6, generator=g), torch.randn(9, 6, generator=g)
    b = torch.randn(9, generator=g) if bias else None
    inverse = torch.randint(0, 40, (300,), generator=g)
    labels = torch.randint(-1, 5, (300,), generator=g)
    text = torch.randn(5, 9, generator=g)
    pairs = torch.randint(0, 300, (50, 2), generator=g)
    for balance in (0.0, 0.5):
        ref_p = [t.clone().requires_grad_(True) for t in (hidden, weight) + ((b,) if bias else ())]
        ref = pgov3d_loss_voxels(torch.nn.functional.linear(*ref_p), inverse, labels, text, pairs, 0.2, balance)
        ref.total.backward()
        got_p = [t.clone().requires_grad_(True) for t in (hidden, weight) + ((b,) if bias else ())]
        lf = LinearFeatures(got_p[0], got_p[1], got_p[2] if bias else None)
        assert torch.allclose(lf.materialise(), torch.nn.functional.linear(*ref_p))
        got = pgov3d_loss_voxels(lf, inverse, labels, text, pairs, 0.2, balance)
        got.total.backward()
        for x, y in ((got.total, ref.total), (got.alignment, ref.alignment), (got.consistency, ref.consistency)):
            assert torch.allclose(x, y, atol=1e-6)
        assert float(ref.consistency) > 0.1  # the pair term is really compared, not two zeros
        for x, y in zip(got_p, ref_p, strict=True):
            assert torch.allclose(x.grad, y.grad, atol=1e-6)
    # Degenerate sets: no labelled point and no pair give exact zeros with finite gradients.
    lf = LinearFeatures(hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True), None)
    empty = pgov3d_loss_voxels(lf, inverse, torch.full((300,), -1), text, torch.zeros((0, 2), dtype=torch.int64))
    empty.total.backward()
    assert float(empty.total) == 0.0 and torch.isfinite(lf.hidden.grad).all()


def test_class_balance_weights_each_point_by_its_entitys_count_to_the_minus_p():
    """Off by default (Eq. 2's plain mean); p = 1 makes every entity count equally, whatever its
    number of points; the voxel form agrees with the per-point form."""
    from pgov3d_core.losses import pgov3d_loss_voxels

    # Entity 0: three points with cos 1 (term 0); entity 1: one point with cos 0 (term 1).
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    assert math.isclose(float(alignment_loss(feats, labels, TEXT)), 0.25, abs_tol=1e-6)
    assert math.isclose(float(alignment_loss(feats, labels, TEXT, class_balance=0.0)), 0.25, abs_tol=1e-6)
    assert math.isclose(float(alignment_loss(feats, labels, TEXT, class_balance=1.0)), 0.5, abs_tol=1e-6)
    # p = 0.5: weights 3^-0.5 (x3) and 1 → 1 / (3·3^-0.5 + 1) = 1 / (√3 + 1).
    assert math.isclose(float(alignment_loss(feats, labels, TEXT, class_balance=0.5)), 1 / (math.sqrt(3) + 1),
                        abs_tol=1e-6)
    # Unlabelled points neither count nor change the entity counts.
    with_unlabelled = torch.cat([feats, torch.tensor([[0.0, 1.0]])])
    assert math.isclose(float(alignment_loss(with_unlabelled, torch.tensor([0, 0, 0, 1, -1]), TEXT, 1.0)), 0.5,
                        abs_tol=1e-6)
    got = pgov3d_loss_voxels(feats, torch.arange(4), labels, TEXT, None, class_balance=1.0)
    assert math.isclose(float(got.alignment), 0.5, abs_tol=1e-6)
    with pytest.raises(ValueError, match="class_balance"):
        alignment_loss(feats, labels, TEXT, class_balance=-1.0)
    from pgov3d_core.training.objective import AlignmentObjective

    with pytest.raises(ValueError, match="loss.class_balance"):
        AlignmentObjective(bank=None, class_balance=-0.5)  # a bad config stops the run before any data loads
