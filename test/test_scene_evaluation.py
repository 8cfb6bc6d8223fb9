import json

import numpy as np
import pytest
import torch

from pgov3d_core.inference import predict_classes
from pgov3d_core.scene_evaluation import (
    BASE_NOVEL_SPLITS,
    SegmentationMetrics,
    base_novel_metrics,
    confusion_matrix,
    harmonic_iou,
    render_top_down,
    split_classes,
    write_report,
)


def test_metrics_match_a_hand_computed_confusion_matrix():
    # 3 classes; ground truth / prediction per point, -1 = ignore in gt, -1 in pred = no label.
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
    pred = np.array([0, 0, 1, -1, 1, 1, 0, 2, 0, 2, 1])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.tolist() == [[2, 1, 0, 1], [1, 2, 0, 0], [1, 0, 1, 0]]
    m = SegmentationMetrics.from_predictions(pred, gt, ["a", "b", "c"])
    # IoU_a = 2 / (4 + 4 - 2), IoU_b = 2 / (3 + 3 - 2), IoU_c = 1 / (2 + 1 - 1)
    np.testing.assert_allclose(m.iou, [2 / 6, 2 / 4, 1 / 2])
    np.testing.assert_allclose(m.acc, [2 / 4, 2 / 3, 1 / 2])
    assert m.miou == pytest.approx((2 / 6 + 2 / 4 + 1 / 2) / 3)
    assert m.macc == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert m.overall_acc == pytest.approx(5 / 9) and m.points == [4, 3, 2]


def test_absent_classes_do_not_count():
    m = SegmentationMetrics.from_predictions([0, 0, 2], [0, 0, 0], ["a", "b", "c"])
    # b and c have no ground truth: undefined and excluded from the mean (c's false positives
    # still lower a's IoU through a's false negative): IoU_a = 2 / (3 + 2 - 2).
    assert np.isnan(m.iou[1]) and np.isnan(m.iou[2])
    assert m.miou == pytest.approx(2 / 3)


def test_harmonic_iou_and_splits():
    assert harmonic_iou(0.6, 0.3) == pytest.approx(2 * 0.6 * 0.3 / 0.9)
    assert harmonic_iou(0.0, 0.0) == 0.0
    for split, novel in BASE_NOVEL_SPLITS.items():
        base, nov = split_classes(split)
        assert len(base) + len(nov) == 19 and not set(base) & set(nov)
        assert f"B{len(base)}/N{len(nov)}" == split and len(novel) == len(nov)
    names = [f"c{i}" for i in range(19)]
    with pytest.raises(ValueError, match="not in the label set"):
        split_classes("B15/N4", names)
    _, novel = split_classes("B15/N4")
    assert novel == [5, 9, 12, 16]  # sofa, bookshelf, desk, toilet in ScanNet order


def test_base_novel_metrics():
    from pgov3d_core.data.label_sets import CLASS_LABELS_20

    names = list(CLASS_LABELS_20[:19])
    gt = np.repeat(np.arange(19), 10)
    pred = gt.copy()
    base, novel = split_classes("B15/N4")
    for c in novel:  # novel classes half right
        idx = np.where(gt == c)[0][:5]
        pred[idx] = base[0]
    m = SegmentationMetrics.from_predictions(pred, gt, names)
    bn = base_novel_metrics(m, "B15/N4")
    assert bn.miou_novel == pytest.approx(0.5)
    expected_base = (sum(1.0 for _ in base[1:]) + 10 / 30) / len(base)  # base[0] absorbs 20 wrong points
    assert bn.miou_base == pytest.approx(expected_base)
    assert bn.hiou == pytest.approx(harmonic_iou(expected_base, 0.5))


def test_predict_classes_is_argmax_cosine():
    text = torch.eye(3)
    feats = torch.tensor([[5.0, 1.0, 0.0], [0.0, 0.1, 0.2], [-1.0, -1.0, -0.5]])
    assert predict_classes(feats, text).tolist() == [0, 2, 2]


def test_reports_are_written(tmp_path, rng):
    names = ["wall", "floor", "chair"]
    gt = rng.integers(0, 3, 500)
    m1 = SegmentationMetrics.from_predictions(rng.integers(0, 3, 500), gt, names)
    m2 = SegmentationMetrics.from_predictions(gt, gt, names)
    paths = write_report(tmp_path, {"stage 1": m1, "stage 2": m2})
    assert "| stage 2 | 100.0 | 100.0 | 100.0 |" in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["runs"]["stage 2"]["miou"] == 1.0
    assert paths["iou_png"].read_bytes()[:4] == b"\x89PNG"
    png = render_top_down(tmp_path / "top.png", rng.uniform(0, 3, (500, 3)), gt, gt, names)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_query_hits_score_each_query_against_its_class():
    from pgov3d_core.scene_evaluation import query_hit_statistics

    truth_xyz = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], np.float32)
    truth = np.array([0, 0, 1, 1])
    # The map labels point 0 with query 0, points 1-3 with query 1 ("couch" is meant to find class 1).
    hits = query_hit_statistics(truth_xyz, np.array([0, 1, 1, 1]), ["chair", "couch"], truth_xyz, truth,
                                ["chair", "sofa"], query_classes=["chair", "sofa"])
    assert [(h.query, h.points) for h in hits] == [("chair", 1), ("couch", 3)]
    assert hits[0].precision == 1.0 and hits[0].recall == 0.5
    assert abs(hits[1].precision - 2 / 3) < 1e-9 and hits[1].recall == 1.0
    # Without query_classes a query that is no class name has no statistics.
    plain = query_hit_statistics(truth_xyz, np.array([0, 1, 1, 1]), ["chair", "couch"], truth_xyz, truth,
                                 ["chair", "sofa"])
    assert np.isnan(plain[1].precision)


def test_top_down_view_is_drawn_below_the_ceiling(tmp_path):
    """A ceiling over the whole room must not hide what stands on the floor: the view is cut below
    the cloud's top, so a chair under the ceiling shows in its own colour; below_top=None draws all."""
    from PIL import Image

    names = ["floor", "ceiling", "chair"]
    g = np.stack(np.meshgrid(np.arange(0, 2, 0.02), np.arange(0, 2, 0.02)), -1).reshape(-1, 2)
    floor = np.c_[g, np.zeros(len(g))]
    ceiling = np.c_[g, np.full(len(g), 2.5)]
    seat = g[(g[:, 0] > 0.8) & (g[:, 0] < 1.2) & (g[:, 1] > 0.8) & (g[:, 1] < 1.2)]
    chair = np.c_[seat, np.full(len(seat), 0.5)]
    xyz = np.concatenate([floor, ceiling, chair]).astype(np.float32)
    lab = np.concatenate([np.zeros(len(floor)), np.ones(len(ceiling)), np.full(len(chair), 2)]).astype(np.int64)

    def pixels(below_top, rgb):  # pixels of colour rgb in the image (the legend holds a few of each)
        png = render_top_down(tmp_path / f"top_{below_top}.png", xyz, lab, lab, names, below_top=below_top)
        img = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
        return int(np.all(img == np.array(rgb), axis=1).sum())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20", 3)
    chair_rgb = tuple((np.array(cmap(2)[:3]) * 255).astype(np.uint8))
    ceiling_rgb = tuple((np.array(cmap(1)[:3]) * 255).astype(np.uint8))
    assert pixels(0.3, chair_rgb) > 20 * pixels(None, chair_rgb)  # the chair shows below the ceiling
    assert pixels(None, ceiling_rgb) > 20 * pixels(0.3, ceiling_rgb)  # unclipped, the ceiling covers it
