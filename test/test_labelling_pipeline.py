"""End to end with tiny random-weight LLaVA-NeXT / GroundingDINO / SAM checkpoints built locally
(production loaders, local_files_only), the resumable cache, the oracle, and the CLI's errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgov3d_core.data.scene import Scene
from pgov3d_core.labelling.config import ConfigError, LabellingConfig
from pgov3d_core.labelling.entities import entity_paths, overlay_path, read_entities, read_entity_record
from pgov3d_core.labelling.labellers import ModelLabeller, labeller_identity
from pgov3d_core.labelling.parsing import parse_object_list
from pgov3d_core.labelling.pipeline import label_scenes
from pgov3d_core.labelling.tiny import build_tiny_weights, tiny_labelling_config, write_block_scene
from pgov3d_core.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return build_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def tiny_labeller(tiny_weights):
    return ModelLabeller(tiny_labelling_config(tiny_weights))


def run(root, cfg, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("print_summary", False)
    return label_scenes(root, cfg, **kw)


def never_load(cfg):
    raise AssertionError("the labeller must not be loaded when every frame is cached")


def file_state(scene: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (scene / "entities").iterdir() if p.is_file()}


def test_tiny_models_end_to_end_then_resume(tmp_path, tiny_weights, tiny_labeller):
    scene = write_block_scene(tmp_path / "scenes" / "room0", n_frames=3)
    cfg = tiny_labelling_config(tiny_weights)
    (report,) = run(tmp_path / "scenes", cfg, labeller_factory=lambda c: tiny_labeller)
    assert (report.frames, report.written, report.cached, report.failed) == (3, 3, 0, {})
    fids = Scene(scene).frame_ids
    n_entities = 0
    for fid in fids:
        ent, labels = read_entities(scene, fid)
        record = read_entity_record(scene, fid)
        assert ent.shape == (48, 64) and ent.dtype == np.int32
        # The grounded list C_i is the parsed list C_i' minus the dropped categories, in list order.
        vocab = record["vocabulary"]
        assert vocab == parse_object_list(record["mllm"]["answer"], max_items=8, max_words=4) and vocab
        assert record["mllm"]["description"]  # turn-1 text kept for inspection
        assert labels == [c for c in vocab if c not in record["dropped"]]
        assert set(record["dropped"].values()) <= {"no box", "no pixels"}
        # Every id in the table owns pixels, and pixel counts match the image.
        assert sorted(set(np.unique(ent)) - {-1}) == list(range(len(labels)))
        assert record["pixel_counts"] == [int((ent == k).sum()) for k in range(len(labels))]
        assert all(0 < s <= 1 for s in record["scores"])
        assert record["labeller"]["name"] == "models" and record["image_size"] == [64, 48]
        n_entities += len(labels)
    assert n_entities > 0, "low thresholds on the tiny GroundingDINO must give boxes"
    assert sum(report.vocabulary.values()) == n_entities

    # Second run: nothing to do, no model loaded, no file rewritten.
    before = file_state(scene)
    first = {fid: read_entities(scene, fid)[0] for fid in fids}
    (again,) = run(tmp_path / "scenes", cfg, labeller_factory=never_load)
    assert (again.written, again.cached) == (0, 3) and again.vocabulary == report.vocabulary
    assert file_state(scene) == before

    # A deleted PNG and a truncated JSON are rebuilt (identically: the pipeline is deterministic);
    # the intact frame is left alone.
    png0, _ = entity_paths(scene, fids[0])
    _, json1 = entity_paths(scene, fids[1])
    png0.unlink()
    json1.write_bytes(json1.read_bytes()[:25])
    (fixed,) = run(tmp_path / "scenes", cfg, labeller_factory=lambda c: tiny_labeller)
    assert (fixed.written, fixed.cached) == (2, 1)
    after = file_state(scene)
    assert after[f"{fids[2]}.png"] == before[f"{fids[2]}.png"] and after[f"{fids[2]}.json"] == before[f"{fids[2]}.json"]
    for fid in fids:
        np.testing.assert_array_equal(read_entities(scene, fid)[0], first[fid])


def test_synthetic_room_frames_with_models_and_oracle(tmp_path, tiny_weights, tiny_labeller):
    from pgov3d_core.data.synthetic import generate_scene

    scene = generate_scene(tmp_path / "synth", seed=3, n_frames=2, width=80, height=60)
    (r,) = run(scene, tiny_labelling_config(tiny_weights), labeller_factory=lambda c: tiny_labeller)
    assert r.written == 2 and not r.failed
    for fid in Scene(scene).frame_ids:
        ent, labels = read_entities(scene, fid)
        assert ent.shape == (60, 80) and labels and ent.max() == len(labels) - 1
    (o,) = run(scene, LabellingConfig(labeller="oracle"))
    assert o.written == 2  # the labeller changed, so the frames are relabelled
    s = Scene(scene)
    for fid in s.frame_ids:
        ent, labels = read_entities(scene, fid)
        gt = s.labels(fid)
        assert labels == [s.class_names[c] for c in np.unique(gt[gt >= 0])]
        np.testing.assert_array_equal(ent >= 0, gt >= 0)


def test_stride_overlay_and_settings_change(tmp_path, tiny_weights, tiny_labeller):
    scene = write_block_scene(tmp_path / "room1", n_frames=3)
    cfg = tiny_labelling_config(tiny_weights)
    (r,) = run(scene, cfg, stride=2, overlay=True, labeller_factory=lambda c: tiny_labeller)
    assert r.frames == 2 and r.written == 2
    assert sorted(p.stem for p in (scene / "entities").glob("*.json")) == ["000000", "000002"]
    assert overlay_path(scene, "000000").exists() and not overlay_path(scene, "000001").exists()
    # A changed threshold is a different labeller identity: the frames are relabelled.
    stricter = tiny_labelling_config(tiny_weights, grounding={"box_threshold": 0.5})
    assert labeller_identity(stricter) != labeller_identity(cfg)
    (r2,) = run(scene, stricter, stride=2)  # the default factory loads the models for the new settings
    assert r2.written == 2 and r2.cached == 0
    assert read_entity_record(scene, "000000")["labeller"]["identity"] == labeller_identity(stricter)
    # Settings that do not change the output (batch size, device) keep the cache.
    (r3,) = run(scene, stricter.with_overrides(batch_size=1), stride=2, labeller_factory=never_load)
    assert r3.cached == 2


def test_long_vocabularies_are_split_into_prompt_chunks(tiny_labeller):
    det = tiny_labeller.detector
    vocab = [f"red {w}" for w in ("chair", "table", "lamp", "sofa", "bed", "door", "window", "wall")] * 4
    vocab = [f"{v} {i}" if i else v for i, v in enumerate(vocab)]  # distinct, ~4 tokens each
    chunks = det._chunks(vocab)
    assert len(chunks) > 1 and [c for _, chunk in chunks for c in chunk] == vocab
    for start, chunk in chunks:
        assert vocab[start : start + len(chunk)] == chunk
        assert len(det.tokenizer(" ".join(f"{c}." for c in chunk))["input_ids"]) <= det.max_text_len
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    (found,) = det.detect([image], [vocab])
    assert len(found) and found.categories.max() < len(vocab)
    assert found.categories.max() >= len(chunks[0][1]), "boxes must come from later chunks too"
    np.testing.assert_array_less(-1e-3, found.boxes)
    assert (found.boxes[:, 2] <= 64).all() and (found.boxes[:, 3] <= 48).all()


def test_oracle_labeller_matches_ground_truth(tmp_path):
    scene = write_block_scene(tmp_path / "room2", n_frames=3)
    (label_dir := scene / "label" / "000001.png").unlink()  # one frame without ground truth
    (r,) = run(scene, LabellingConfig(labeller="oracle"), overlay=True)
    assert r.written == 2 and list(r.failed) == ["000001"] and "label" in r.failed["000001"]
    assert not label_dir.exists()
    s = Scene(scene)
    for fid in ("000000", "000002"):
        gt = s.labels(fid)
        ent, labels = read_entities(scene, fid)
        present = sorted(int(c) for c in np.unique(gt[gt >= 0]))
        assert labels == [s.class_names[c] for c in present]
        expected = np.full(gt.shape, -1)
        for k, c in enumerate(present):
            expected[gt == c] = k
        np.testing.assert_array_equal(ent, expected)
        assert read_entity_record(scene, fid)["scores"] == [1.0] * len(labels)
        assert overlay_path(scene, fid).exists()
    assert r.vocabulary == {"wall": 2, "floor": 2, "chair": 2, "table": 2}


def test_missing_weight_paths_fail_fast_naming_the_key(tmp_path, tiny_weights):
    for key in ("llava", "grounding_dino", "sam"):
        weights = {**tiny_weights, key: str(tmp_path / f"no-{key}")}
        with pytest.raises(WeightsError, match=rf"weights\.{key}: .*no-{key} does not exist"):
            ModelLabeller(tiny_labelling_config(weights))
    with pytest.raises(WeightsError, match=r"weights\.llava: .* not a transformers checkpoint folder"):
        ModelLabeller(tiny_labelling_config({**tiny_weights, "llava": tiny_weights["sam"]}))
    with pytest.raises(WeightsError, match=r"weights\.sam: .* not a SAM vit_b checkpoint"):
        ModelLabeller(tiny_labelling_config(tiny_weights, segmentation={"sam_model_type": "vit_b"}))


def test_cli_missing_weights_is_one_line_error(tmp_path):
    scene = write_block_scene(tmp_path / "room3", n_frames=1)
    config = tmp_path / "labelling.yaml"
    config.write_text("labeller: models\nweights:\n  llava: weights/llava\n  grounding_dino: ''\n  sam: ''\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "pgov3d_core.tools.label_frames", "--scene-root", str(scene), "--config", str(config),
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "weights.llava" in errors[0] and str(tmp_path / "weights" / "llava") in errors[0]
    assert not list(scene.glob("entities/*.json"))


def test_cli_oracle_and_import_entry_point(tmp_path):
    from pgov3d_core.tools.label_frames import label_scenes as entry
    from pgov3d_core.tools.label_frames import main

    assert entry is label_scenes
    root = tmp_path / "scenes"
    write_block_scene(root / "a", n_frames=2)
    write_block_scene(root / "b", n_frames=2, seed=1)
    assert main(["--scene-root", str(root), "labeller=oracle", "--no-progress"]) == 0
    assert len(list(root.glob("*/entities/*.json"))) == 4
    (root / "b" / "label" / "000000.png").unlink()
    (root / "b" / "entities" / "000000.json").unlink()
    assert main(["--scene-root", str(root), "labeller=oracle", "--no-progress"]) == 1
    assert main(["--scene-root", str(tmp_path / "nowhere"), "labeller=oracle"]) == 2
    # A broken scene is reported; the others are still labelled.
    write_block_scene(root / "c", n_frames=1)
    (root / "a" / "intrinsic" / "intrinsic_depth.txt").unlink()
    reports = run(root, LabellingConfig(labeller="oracle"))
    assert [list(r.failed) for r in reports] == [["(scene)"], ["000000"], []]
    assert (root / "c" / "entities" / "000000.json").exists()


def test_config_is_checked(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("grounding:\n  box_treshold: 0.2\n")
    with pytest.raises(ConfigError, match="box_treshold"):
        LabellingConfig.load(cfg_path)
    cfg_path.write_text("labeller: magic\n")
    with pytest.raises(ConfigError, match="labeller must be one of"):
        LabellingConfig.load(cfg_path)
    cfg_path.write_text("weights:\n  sam: ckpt/sam.pth\n")
    assert LabellingConfig.load(cfg_path).weights.sam == str(tmp_path / "ckpt" / "sam.pth")
    shipped = LabellingConfig.load(REPO / "config" / "labelling.yaml")
    assert shipped.labeller == "models" and shipped.vocabulary == LabellingConfig().vocabulary
    with pytest.raises(ConfigError, match="stride"):
        shipped.with_overrides(stride=0)
    with pytest.raises(ConfigError, match="weights: expected a mapping"):
        LabellingConfig.from_dict({"weights": "/some/path"})
    # to_dict is what the labeller identity and the curriculum's merge read: it must hold every
    # setting, so the config rebuilt from its JSON is the same config.
    assert LabellingConfig.from_dict(json.loads(json.dumps(shipped.to_dict()))) == shipped
    changed = shipped.merged({"grounding": {"nms_iou": 0.3}})
    assert changed.to_dict()["grounding"]["nms_iou"] == 0.3 and changed != shipped
    # The CLIP text encoder of the consumers takes its checkpoint from weights.text_encoder.
    with pytest.raises(WeightsError, match="weights.text_encoder is not set"):
        shipped.text_encoder_config()
    te = LabellingConfig.from_dict({"weights": {"text_encoder": "/w/clip.pt"}}).text_encoder_config()
    assert te["checkpoint"] == "/w/clip.pt" and te["model"] == "ViT-B-32" and not te["random_init"]
