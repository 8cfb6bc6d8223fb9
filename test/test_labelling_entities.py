"""Mask merging, GroundingDINO output decoding, the oracle, and the entity cache files (fixed inputs)."""

import json

import numpy as np
import pytest
import torch

from pgov3d_core.labelling.entities import (
    EntityError,
    EntityResult,
    check_entities,
    entity_paths,
    merge_masks,
    read_entities,
    render_overlay,
    write_entities,
)
from pgov3d_core.labelling.labellers import LabellingError, oracle_entities
from pgov3d_core.labelling.models import Detections, detections_from_outputs, suppress, token_categories


def box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- merging


def test_overlaps_go_to_the_higher_score_and_ids_follow_the_vocabulary():
    vocab = ["wall", "chair", "lamp", "table"]
    masks = np.stack([
        box_mask(10, 10, 0, 10, 0, 10),  # wall everywhere, weak
        box_mask(10, 10, 2, 8, 2, 8),  # chair, strong
        box_mask(10, 10, 5, 10, 5, 10),  # lamp overlaps the chair, medium
    ])
    entity, labels, scores, dropped = merge_masks(masks, np.array([0.3, 0.9, 0.6]), np.array([0, 1, 2]), vocab)
    assert entity.dtype == np.uint16 and entity.shape == (10, 10)
    assert labels == ["wall", "chair", "lamp"] and scores == pytest.approx([0.3, 0.9, 0.6])
    assert dropped == {"table": "no box"}
    assert entity[4, 4] == 2 and entity[7, 7] == 2  # chair beats lamp inside the chair box
    assert entity[9, 9] == 3  # lamp beats wall outside the chair
    assert entity[0, 0] == 1
    # The answer does not depend on the order of the masks.
    perm = [2, 0, 1]
    again = merge_masks(masks[perm], np.array([0.3, 0.9, 0.6])[perm], np.array([0, 1, 2])[perm], vocab)
    np.testing.assert_array_equal(again[0], entity)


def test_fully_covered_categories_are_dropped_and_ids_are_compact():
    vocab = ["chair", "cushion", "sofa"]
    masks = np.stack([box_mask(8, 8, 0, 4, 0, 4), box_mask(8, 8, 1, 3, 1, 3), box_mask(8, 8, 4, 8, 4, 8)])
    entity, labels, scores, dropped = merge_masks(masks, np.array([0.8, 0.5, 0.7]), np.array([0, 1, 2]), vocab)
    assert labels == ["chair", "sofa"] and dropped == {"cushion": "no pixels"}
    assert set(np.unique(entity)) == {0, 1, 2} and entity[2, 2] == 1 and entity[5, 5] == 2
    assert entity[7, 0] == 0


def test_several_boxes_of_one_category_and_score_ties():
    vocab = ["chair", "table"]
    masks = np.stack([box_mask(6, 6, 0, 3, 0, 6), box_mask(6, 6, 3, 6, 0, 6), box_mask(6, 6, 0, 6, 0, 6)])
    entity, labels, scores, _ = merge_masks(masks, np.array([0.4, 0.7, 0.4]), np.array([0, 0, 1]), vocab)
    # Tie between detection 0 (chair) and 2 (table) at 0.4: the earlier detection keeps the pixel.
    assert labels == ["chair"] and scores == pytest.approx([0.7])
    assert (entity == 1).all()
    entity, labels, _, dropped = merge_masks(np.zeros((0, 6, 6), bool), np.zeros(0), np.zeros(0, int), vocab)
    assert labels == [] and not entity.any() and dropped == {"chair": "no box", "table": "no box"}


def test_min_pixels_and_bad_inputs():
    masks = np.stack([box_mask(6, 6, 0, 1, 0, 2), box_mask(6, 6, 2, 6, 0, 6)])
    _, labels, _, dropped = merge_masks(masks, np.array([0.9, 0.5]), np.array([0, 1]), ["cup", "desk"], min_pixels=3)
    assert labels == ["desk"] and dropped == {"cup": "no pixels"}
    with pytest.raises(ValueError, match="out of range"):
        merge_masks(masks, np.array([0.9, 0.5]), np.array([0, 2]), ["cup", "desk"])
    with pytest.raises(ValueError, match="must agree"):
        merge_masks(masks, np.array([0.9]), np.array([0, 1]), ["cup", "desk"])


# --------------------------------------------------------------------------- GroundingDINO decoding


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    from pgov3d_core.labelling.tiny import _bert_vocab

    path = tmp_path_factory.mktemp("bert") / "vocab.txt"
    path.write_text("\n".join(_bert_vocab()) + "\n")
    return BertTokenizer(vocab=str(path), do_lower_case=True)


def test_token_categories_map_word_pieces_to_their_category(bert_tokenizer):
    prompt, ids, cats = token_categories(bert_tokenizer, ["red chair", "Tables", "lamp"])
    assert prompt == "red chair. tables. lamp."
    tokens = bert_tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "red", "chair", ".", "table", "##s", ".", "lamp", ".", "[SEP]"]
    assert cats.tolist() == [-1, 0, 0, -1, 1, 1, -1, 2, -1, -1]
    assert ids[3] == 1012 and ids[0] == 101  # the ids GroundingDINO's text masks expect


def test_detections_from_outputs_thresholds_assignment_and_scaling():
    cats = np.array([-1, 0, 0, -1, 1, -1, -1])  # [CLS] red chair . lamp . [SEP]
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    logits = torch.full((4, 10), logit(0.01))
    logits[:, 7:] = -float("inf")  # text padding
    logits[0, 2] = logit(0.9)  # query 0: chair, confident
    logits[1, 4] = logit(0.5)  # query 1: lamp, medium
    logits[2, 4] = logit(0.2)  # query 2: lamp, below box threshold
    logits[3, 3] = logit(0.8)  # query 3: only the "." token fires → no category above text threshold
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.2, 0.2], [0.5, 0.5, 1, 1], [0.5, 0.5, 1, 1]])
    det = detections_from_outputs(logits, boxes, cats, (100, 200), box_threshold=0.3, text_threshold=0.25)
    assert det.categories.tolist() == [0, 1]
    assert det.scores == pytest.approx([0.9, 0.5], abs=1e-5)
    np.testing.assert_allclose(det.boxes, [[50, 25, 150, 75], [30, 15, 70, 35]], atol=1e-4)


def test_boxes_are_clipped_and_degenerate_ones_dropped():
    cats = np.array([-1, 0, -1])
    logits = torch.full((2, 3), 5.0)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.001, 0.5]])
    det = detections_from_outputs(logits, boxes, cats, (10, 10), 0.3, 0.25)
    assert len(det) == 1
    np.testing.assert_allclose(det.boxes[0], [0, 0, 2.5, 2.5])


def test_suppress_is_per_category_and_caps():
    det = Detections(
        np.array([[0, 0, 10, 10], [0, 0, 10, 9.5], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
        np.array([0.9, 0.8, 0.7, 0.6], np.float32),
        np.array([0, 0, 1, 0]),
    )
    kept = suppress(det, iou=0.7, max_boxes=10)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])  # the near-duplicate chair box is gone
    assert suppress(det, iou=1.0, max_boxes=2).scores.tolist() == pytest.approx([0.9, 0.8])


# --------------------------------------------------------------------------- oracle


def test_oracle_remaps_present_classes_in_id_order():
    labels = np.array([[-1, 3, 3], [0, 0, 7]], np.int32)
    names = [f"class{i}" for i in range(8)]
    res = oracle_entities(labels, names)
    assert res.labels == ["class0", "class3", "class7"] and res.scores == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(res.entity, [[0, 2, 2], [1, 1, 3]])
    with pytest.raises(LabellingError, match="label id 7 has no class name"):
        oracle_entities(labels, names[:5])
    empty = oracle_entities(np.full((2, 2), -1), names)
    assert empty.labels == [] and not empty.entity.any()


# --------------------------------------------------------------------------- cache files


def sample_result():
    entity = np.zeros((5, 7), np.uint16)
    entity[1:3, 1:4] = 1
    entity[4, :] = 2
    return EntityResult(entity, ["chair", "floor"], [0.8, 0.6], ["chair", "floor", "lamp"], {"lamp": "no box"},
                        "A room.", "chair, floor, lamp")


def test_write_read_round_trip(tmp_path):
    write_entities(tmp_path, "000010", sample_result(), {"name": "models", "identity": "id1"})
    ent, labels = read_entities(tmp_path, "000010")
    assert ent.dtype == np.int32 and ent.shape == (5, 7) and labels == ["chair", "floor"]
    assert ent[0, 0] == -1 and ent[1, 1] == 0 and ent[4, 0] == 1
    record = json.loads(entity_paths(tmp_path, "000010")[1].read_text())
    assert record["image_size"] == [7, 5] and record["pixel_counts"] == [6, 7]
    assert record["mllm"] == {"description": "A room.", "answer": "chair, floor, lamp"}
    assert record["dropped"] == {"lamp": "no box"} and record["labeller"]["identity"] == "id1"
    assert check_entities(tmp_path, "000010", (7, 5), "id1") is None
    assert "were labelled by 'id1'" in check_entities(tmp_path, "000010", (7, 5), "id2")
    assert "does not match" in check_entities(tmp_path, "000010", (8, 5), "id1")
    assert not list(tmp_path.glob("entities/.*"))  # no temp files left behind


@pytest.mark.parametrize("damage", ["truncate_png", "delete_png", "bad_json", "delete_json", "id_overflow"])
def test_corrupt_files_are_detected_by_name(tmp_path, damage):
    write_entities(tmp_path, "7", sample_result(), {"name": "models", "identity": "x"})
    png, js = entity_paths(tmp_path, "7")
    if damage == "truncate_png":
        png.write_bytes(png.read_bytes()[:40])
    elif damage == "delete_png":
        png.unlink()
    elif damage == "bad_json":
        js.write_text('{"format": "pgov3d-entities", "labels": [')
    elif damage == "delete_json":
        js.unlink()
    else:
        record = json.loads(js.read_text())
        record["labels"], record["scores"] = ["chair"], [0.8]
        js.write_text(json.dumps(record))
    name = js.name if damage in ("bad_json", "delete_json") else png.name
    with pytest.raises(EntityError, match=name.replace(".", r"\.")):
        read_entities(tmp_path, "7")
    assert check_entities(tmp_path, "7", (7, 5), "x") is not None


def test_entity_result_rejects_inconsistent_tables():
    with pytest.raises(ValueError, match="entity id 2"):
        EntityResult(np.full((2, 2), 2, np.uint16), ["a"], [1.0])
    with pytest.raises(ValueError, match="scores"):
        EntityResult(np.zeros((2, 2), np.uint16), ["a"], [])


def test_overlay_tints_entities_and_names_them():
    color = np.full((40, 60, 3), 100, np.uint8)
    entity = np.zeros((40, 60), np.int64)
    entity[10:30, 10:50] = 1
    image = np.asarray(render_overlay(color, entity, ["sofa"]))
    assert image.shape == (40, 60, 3)
    assert (image[0, 0] == 100).all()  # untouched outside entities
    assert not (image[12, 12] == 100).all()  # tinted inside
