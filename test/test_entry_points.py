"""Entry points: every console script of setup.py names an importable main and is installed where
`ros2 run` looks; stage 2 runs alone from its own command line on a stage-1 checkpoint."""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgov3d_core.data.synthetic import generate_dataset
from pgov3d_core.training import checkpoint as ckpt_io
from pgov3d_ros.processes import LIB

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict((part.strip() for part in line.split("=", 1)) for line in scripts)
    raise AssertionError("setup.py declares no entry_points")


def test_console_scripts_resolve_to_a_main_and_are_installed():
    scripts = console_scripts()
    steps = {"label_frames", "train_stage1", "train_stage2", "run_curriculum", "check_scene", "map_scene"}
    assert steps | {"mapping_node", "replay", "tf_pose"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
        assert (LIB / name).is_file() and os.access(LIB / name, os.X_OK), f"{LIB / name} (run make setup)"


def test_the_documented_curriculum_script_path_runs_the_curriculum_cli(tmp_path):
    """`python training/run_curriculum.py` (the path the guide and older READMEs give) is the same
    CLI as the console script: run from another folder, it parses the same flags and rejects a
    missing config with the CLI's own error."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = str(ROOT / "training" / "run_curriculum.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env,
                           timeout=300, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for flag in ("--from-stage", "--resume", "--no-consistency", "--stage2-from-scratch"):
        assert flag in shown.stdout
    missing = subprocess.run([sys.executable, script, "--config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert missing.returncode != 0 and "nope.yaml" in missing.stderr + missing.stdout


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


def test_stage1_refuses_bad_settings_in_one_line(tmp_path):
    scenes = generate_dataset(tmp_path / "scenes", [0], n_frames=4, width=48, height=36, density=50)
    common = ["--config", "config/stage1.yaml", "--run-dir", str(tmp_path / "s1"),
              f"data.scenes={json.dumps([str(p) for p in scenes])}", "data.synthetic=null", "train.steps=1"]
    for setting, message in (("loss.class_balance=-1", "error: loss.class_balance must be >= 0"),
                             ("data.augment.thin=[0.1,0.0]", "error: data.augment: thin must be [min, max]"),
                             ("model.head_channels=-3", "error: head_channels must be >= 0")):
        bad = _run("pgov3d_core.tools.train_stage1", *common, setting)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
        errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message), errors
    assert not (tmp_path / "s1" / "checkpoints").exists()


@pytest.mark.slow
def test_stage2_runs_alone_on_a_stage1_checkpoint(tmp_path):
    scenes = generate_dataset(tmp_path / "scenes", [0, 1], n_frames=6, width=80, height=60, density=100)
    listed = f"data.scenes={json.dumps([str(p) for p in scenes])}"
    quiet = ["train.progress=false", "train.tensorboard=false", "train.threads=1"]
    s1 = _run("pgov3d_core.tools.train_stage1", "--config", "config/stage1.yaml", "--run-dir", str(tmp_path / "s1"),
              listed, "data.synthetic=null", "data.match_voxel=0.05", "train.steps=2", "train.ckpt_every=2",
              "train.batch_size=1", *quiet)
    assert s1.returncode == 0, s1.stderr[-3000:]
    stage1 = tmp_path / "s1" / "checkpoints" / "last.pt"
    # Without the stage-1 checkpoint: one clear line, no traceback, exit status 2.
    missing = _run("pgov3d_core.tools.train_stage2", "--run-dir", str(tmp_path / "bad"), listed, *quiet)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert [ln for ln in missing.stderr.splitlines() if ln.startswith("error:")] == [
        "error: pseudo.checkpoint: the stage-1 checkpoint that produces the pseudo-labels is required"]
    s2 = _run("pgov3d_core.tools.train_stage2", "--config", "config/stage2.yaml", "--run-dir", str(tmp_path / "s2"),
              "--quiet", f"pseudo.checkpoint={stage1}", f"train.init_from={stage1}", listed, "data.labels=oracle",
              "data.max_points=4000", "pseudo.max_passes=2", "train.steps=2", "train.ckpt_every=1",
              "train.batch_size=1", *quiet)
    assert s2.returncode == 0, s2.stderr[-3000:]
    assert "stage 2: step 2, loss " in s2.stdout
    final = ckpt_io.load_checkpoint(tmp_path / "s2" / "checkpoints" / "last.pt")
    assert final["step"] == 2 and final["stage"] == "stage2"
    assert final["model_config"] == ckpt_io.load_checkpoint(stage1)["model_config"]  # initialised from stage 1
    for scene in scenes:  # the pseudo-labels of every scene, cached beside it
        assert len(list((scene / "pseudo_labels").glob("*.npz"))) == 1
