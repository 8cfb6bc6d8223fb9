"""map_scene: the node's OnlineMapper over a scene folder, without ROS: map, PLY and PNG renders
per query, and open-vocabulary text through the bundled sentence encoder."""

import numpy as np
import pytest
from PIL import Image

from pgov3d_core.data.scene import Scene, read_ply_vertices
from pgov3d_core.data.synthetic import generate_scene
from pgov3d_core.map import VoxelMap
from pgov3d_core.tools.map_scene import main


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    for seed in range(20):  # the first room with a sofa
        path = generate_scene(tmp_path_factory.mktemp(f"room{seed}") / "room", seed=seed, n_frames=6,
                              width=120, height=90)
        scene = Scene(path)
        sofa = scene.meta.class_names.index("sofa") + 1
        if any((scene.raw_labels(f) == sofa).mean() > 0.05 for f in scene.frame_ids):
            return path
    pytest.skip("no synthetic room with a visible sofa")


def test_map_scene_writes_map_ply_and_renders_and_finds_a_couch(room, tmp_path, capsys):
    out = tmp_path / "out"
    queries = ["couch", "lamp", "chair", "bed", "table", "wall", "floor"]
    assert main([str(room), "--oracle-labels", "--query", *queries, "--out", str(out), "--voxel-size", "0.05",
                 "--min-score", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "integrated 6 of 6 frames" in printed and "couch" in printed
    vmap = VoxelMap.load(out / "map.npz")
    ply = read_ply_vertices(out / "query.ply")
    assert len(ply["x"]) == len(vmap) and {"label", "score"} <= set(ply)
    for name in ("couch_top.png", "couch_oblique.png", "lamp_top.png", "lamp_oblique.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 200 and np.asarray(im.convert("L")).std() > 5, name  # a picture, not blank
    # "couch" was never a class name: the text space relates it to "sofa" more than to the other
    # furniture queried beside it. The voxels it labels are the sofa's, and most of the sofa is found.
    sofa = Scene(room).meta.class_names.index("sofa")
    majority = vmap.majority_labels().numpy()
    couch = ply["label"] == 0
    assert couch.sum() > 20
    precision = (majority[couch] == sofa).mean()
    recall = couch[majority == sofa].mean()
    assert precision > 0.9 and recall > 0.9, (precision, recall)


def test_map_scene_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--oracle-labels", "--query", "x", "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err
