"""MLLM-style naming in the oracle labeller (seeded synonyms per frame and class) and Stage 2's
scene vocabulary as a union of free-form names."""

import numpy as np
import pytest

from pgov3d_core.data.scene import Scene
from pgov3d_core.data.synthetic import CLASS_NAMES, generate_scene
from pgov3d_core.labelling.config import ConfigError, LabellingConfig
from pgov3d_core.labelling.entities import read_entities, read_entity_record
from pgov3d_core.labelling.labellers import OracleLabeller
from pgov3d_core.labelling.pipeline import label_scenes
from pgov3d_core.labelling.synonyms import SYNONYMS, check_synonyms, draw_name
from pgov3d_core.training.labels import EntityCacheLabels
from pgov3d_core.training.pseudo_labels import scene_vocabulary
from pgov3d_core.training.stage2 import scene_entity_vocabulary


def oracle(naming="synonyms", seed=0, synonyms=None) -> OracleLabeller:
    cfg = LabellingConfig.from_dict({"labeller": "oracle", "oracle": {"naming": naming, "seed": seed,
                                                                      "synonyms": synonyms}})
    return OracleLabeller(cfg)


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    root = generate_scene(tmp_path_factory.mktemp("room") / "room", seed=3, n_frames=16, width=64, height=48,
                          density=200)
    scene = Scene(root)
    return scene, [scene.frame(f) for f in scene.frame_ids]


def test_synonym_names_are_seeded_deterministic_and_order_free(room):
    scene, frames = room
    a = oracle().label(frames, scene.class_names, scene="room")
    # Another labeller instance, frames in reverse order and one at a time: the same names.
    b = [oracle().label([f], scene.class_names, scene="room")[0] for f in reversed(frames)][::-1]
    assert [r.labels for r in a] == [r.labels for r in b]
    other_seed = oracle(seed=1).label(frames, scene.class_names, scene="room")
    other_scene = oracle().label(frames, scene.class_names, scene="another room")
    assert [r.labels for r in other_seed] != [r.labels for r in a]
    assert [r.labels for r in other_scene] != [r.labels for r in a]


def test_synonyms_rename_entities_but_keep_pixels_and_ground_truth(room):
    scene, frames = room
    plain = oracle("canonical").label(frames, scene.class_names, scene="room")
    named = oracle().label(frames, scene.class_names, scene="room")
    owner = {n: c for c, names in SYNONYMS.items() for n in names}
    used: dict[str, set[str]] = {}
    for p, s in zip(plain, named, strict=True):
        np.testing.assert_array_equal(p.entity, s.entity)  # same pixels, entity k = same class
        assert p.labels == sorted(p.labels, key=CLASS_NAMES.index)  # canonical mode: class names
        for cls, name in zip(p.labels, s.labels, strict=True):
            assert owner[name] == cls  # one name per class and frame, from that class's list
            used.setdefault(cls, set()).add(name)
    # Over 16 frames the frequent classes are named in more than one way, as an MLLM would.
    assert sum(len(v) > 1 for v in used.values()) >= 3, used
    assert scene.class_names == list(CLASS_NAMES)  # evaluation's ground truth is untouched


def test_synonym_table_is_checked():
    check_synonyms(SYNONYMS)
    assert all(names[0] == cls for cls, names in SYNONYMS.items())
    with pytest.raises(ValueError, match="'couch' is listed for both 'sofa' and 'chair'"):
        check_synonyms({"sofa": ["sofa", "couch"], "chair": ["chair", "couch"]})
    with pytest.raises(ValueError, match="not written in normalised form"):
        check_synonyms({"sofa": ["Sofas"]})
    with pytest.raises(ConfigError, match="naming must be one of"):
        LabellingConfig.from_dict({"oracle": {"naming": "llava"}})
    assert draw_name(SYNONYMS, "unlisted class", 0, "s", "0") == "unlisted class"


def test_cache_holds_the_drawn_names_and_a_naming_change_relabels(tmp_path):
    root = generate_scene(tmp_path / "room", seed=4, n_frames=6, width=48, height=36, density=200)
    cfg = LabellingConfig.from_dict({"labeller": "oracle", "oracle": {"naming": "synonyms"}})
    (report,) = label_scenes(root, cfg, progress=False, print_summary=False)
    assert report.written == 6
    scene = Scene(root)
    frames = [scene.frame(f) for f in scene.frame_ids]
    expected = OracleLabeller(cfg).label(frames, scene.class_names, scene=root.name)
    for fid, res in zip(scene.frame_ids, expected, strict=True):
        entity, labels = read_entities(root, fid)
        assert labels == res.labels  # written exactly as the labeller named them
        np.testing.assert_array_equal(entity + 1, res.entity)
        assert read_entity_record(root, fid)["labeller"]["identity"].startswith("oracle|v1|synonyms|0|")
    (again,) = label_scenes(root, cfg, progress=False, print_summary=False)
    assert again.cached == 6 and again.written == 0
    (plain,) = label_scenes(root, cfg.merged({"oracle": {"naming": "canonical"}}), progress=False,
                            print_summary=False)
    assert plain.written == 6
    assert set(plain.vocabulary) <= set(CLASS_NAMES)


def test_scene_vocabulary_is_the_union_of_synonyms(tmp_path):
    # Normalised union, generic-sounding grounded labels kept ("picture" owns pixels), most frequent first.
    assert scene_vocabulary([["Couches", "picture", "sofa"], ["sofa", "the Paintings"], ["sofa", "couch"]]) == [
        "sofa", "couch", "painting", "picture"]
    root = generate_scene(tmp_path / "room", seed=4, n_frames=10, width=48, height=36, density=200)
    cfg = LabellingConfig.from_dict({"labeller": "oracle", "oracle": {"naming": "synonyms"}})
    label_scenes(root, cfg, progress=False, print_summary=False)
    scene = Scene(root)
    vocab = scene_entity_vocabulary(scene, EntityCacheLabels())
    drawn = set()
    for fid in scene.frame_ids:
        entity, labels = read_entities(root, fid)
        drawn |= {labels[k] for k in np.unique(entity[entity >= 0])}
    assert set(vocab) == drawn and len(vocab) == len(set(vocab))
    owner = {n: c for c, names in SYNONYMS.items() for n in names}
    classes = {owner[n] for n in vocab}
    assert len(vocab) > len(classes)  # several names for some class: a real union of free-form names
