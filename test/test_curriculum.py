"""The curriculum end to end on synthetic rooms with oracle entities (issue: stage 2, CLI, evaluation),
and the demo's steps at the smallest size."""

import subprocess
import sys
from pathlib import Path

import pytest

from pgov3d_core.config import load_config
from pgov3d_core.training.checkpoint import latest_checkpoint, load_checkpoint
from pgov3d_core.training.curriculum import (
    CurriculumError,
    CurriculumOptions,
    changed_settings,
    checkpoint_defaults,
    run_curriculum,
    section_defaults,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def small_config(tmp: Path, **extra) -> dict:
    overrides = [
        f"run_dir={tmp}", f"data.train_root={tmp}/scenes/train", f"data.val_root={tmp}/scenes/val",
        "data.synthetic.train_seeds=[0,1,2,3]", "data.synthetic.val_seeds=[100]", "data.synthetic.n_frames=12",
        "data.synthetic.width=80", "data.synthetic.height=60", "data.synthetic.density=600",
        "stage1.overrides.train.steps=450", "stage1.overrides.train.warmup_steps=10",
        "stage1.overrides.train.batch_size=2",
        "stage1.overrides.train.ckpt_every=100", "stage1.overrides.data.frame_stride=1",
        # 5 cm, not the demo's 8 cm: at this smallest size (80x60 frames, 600 points/m2) 8 cm made
        # stage 1 better (mIoU 20.2) but stage 2 label half the held-out floor "ceiling" (12.9; on
        # the EPYC) - without height or normals the two planes differ only by context. Issue 13.
        "stage1.overrides.data.voxel_size=0.05",
        # The demo's hidden head layer and thinning (README "What limited stage 1") are off here: at
        # this size and 450 steps the head did not learn above this test's bar (overall accuracy 32.7 %
        # with thinning, 33.4 % without, majority 30.1 %; 2-core AMD EPYC), and 80x60 frames are
        # already sparser than thinning's 2-6 cm cells. Issue 13.
        "stage1.overrides.model.head_channels=0",
        "stage1.overrides.data.augment.thin=[0.0,0.0]",
        # The demo's rare-entity paste is off too: 4 pasted entities in every 80x60 frame of these 4
        # rooms kept stage 1 near the majority's level on a 2-core Intel Xeon (AMX), 450 steps:
        # overall accuracy 35.4 / 35.9 % (training seeds 0 / 1; majority 30.1 %) against 59.0 / 48.5 %
        # without (stage 2 56.6 / 44.3 %). The paste has its own tests (test_stage1.py). Issue 13.
        "stage1.overrides.data.paste.count=0",
        "stage1.overrides.train.tensorboard=false",
        "stage2.overrides.train.steps=60", "stage2.overrides.train.ckpt_every=30",
        # config/stage2.yaml's 0.001, not the demo's 0.01: the demo's rate was chosen where stage 1
        # labels well (~55 mIoU on the validation rooms); here stage 1 is at 16.5 mIoU / 59 % accuracy,
        # and 60 steps at 0.01 fit its wall-and-floor labels so fast that stage 2 fell to 7.3 mIoU /
        # 35 % (majority 30 %; 0.003: 10.9 / 47 %, 0.001: 12.9 / 52 %; 2-core AMD EPYC). Issue 13.
        "stage2.overrides.train.lr=0.001",
        # Whole scenes (< 60k points at this density), 2 a step, as the figures below were measured;
        # the demo's 4 crops of 30k points (chosen on the validation rooms) made this size's 60 steps
        # end at stage 2 11.4 against stage 1 17.1 mIoU (2-core AMD EPYC). Issue 13.
        "stage2.overrides.data.max_points=60000", "stage2.overrides.train.batch_size=2",
        "stage2.overrides.train.tensorboard=false", "stage2.overrides.pseudo.max_passes=4",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config(ROOT / "config" / "curriculum.yaml", overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curriculum")
    cfg = small_config(tmp)
    return tmp, cfg, run_curriculum(cfg, CurriculumOptions(progress=False))


def test_both_stages_learn_and_stage2_keeps_up(trained):
    tmp, _, result = trained
    s1, s2 = result.metrics["stage 1"], result.metrics["stage 2"]
    n_present = sum(1 for p in s1.points if p > 0)
    chance_macc = 1.0 / n_present  # a featureless model's mean class accuracy
    majority = max(s1.points) / sum(s1.points)  # overall accuracy of the best constant prediction
    # Deterministic for one CPU (seeded data, one thread), but not across CPUs: oneDNN/MKL round
    # differently on AVX2, AVX512 and AMX, and 300 steps at this size amplify that. 300 steps with
    # 50 warm-up (the figures measured on an Intel Xeon: stage 1 mIoU 13.3 / mAcc 15.9 / acc 54.0)
    # gave mAcc 12.0 % = 1.44x chance on a 2-core AMD EPYC, failing below. 450 steps with 10 warm-up,
    # measured on that EPYC over training seeds 0-3 (12 classes present, majority wall 30.1 %):
    # stage 1 mIoU 10.4-15.4, mAcc 1.71-2.16x chance, acc 46.2-56.5 %; stage 2 mIoU 10.7-12.9,
    # mAcc 1.58-1.95x chance, acc 45.8-56.0 %; stage 2 - stage 1 mIoU from -4.7 to +2.5 points.
    # At this tiny CPU size mostly wall and floor are learnt, so the test guards learning and that
    # stage 2 does not collapse (seen at 300 steps, 10 warm-up, seed 1: acc 34.5 %, near the majority's level),
    # not the paper's stage-2 gain (bench_curriculum measures that, and the demo's quality).
    for m in (s1, s2):
        assert m.overall_acc > majority + 0.1, (m.overall_acc, majority)
        assert m.macc > 1.5 * chance_macc, (m.macc, chance_macc)
        assert m.miou > 0.05, m
    assert s2.miou >= s1.miou - 0.05, (s1.miou, s2.miou)
    report = result.report["markdown"].read_text()
    assert "| stage 1 |" in report and "| stage 2 |" in report
    # evaluation.query_texts: the same features also classified under names never used in training.
    unseen = result.metrics["stage 2, query texts"]
    assert unseen.class_names == s2.class_names and unseen.points == s2.points
    assert "| stage 2, query texts |" in report
    # evaluation.repeated_sampling: every point classified from its distribution averaged over at
    # least 16 repeated-grid-sampling passes (rows after the single-pass ones).
    assert [k for k in result.metrics if "passes" in k] == ["stage 1, 16 passes", "stage 2, 16 passes"]
    for name in ("stage 1", "stage 2"):
        voted = result.metrics[f"{name}, 16 passes"]
        assert voted.points == s1.points and voted.class_names == s1.class_names
        assert voted.overall_acc > majority + 0.1 and voted.macc > 1.5 * chance_macc, (name, voted)
    assert "| stage 2, 16 passes |" in report
    assert (tmp / "report" / "per_class_iou.png").exists()
    assert list((tmp / "report").glob("top_down_stage2_*.png"))
    pseudo = list((tmp / "scenes" / "train").glob("*/pseudo_labels/*.npz"))
    assert len(pseudo) == 4
    # Stage 2 trains (and its checkpoint tells inference to run) at the voxel size stage 1 learnt at
    # (config/stage2.yaml data.voxel_size: null), not at a default of its own.
    s1_voxel = load_checkpoint(latest_checkpoint(tmp / "stage1"))["config"]["data"]["voxel_size"]
    s2_voxel = load_checkpoint(latest_checkpoint(tmp / "stage2"))["config"]["data"]["voxel_size"]
    assert s1_voxel == s2_voxel == 0.05


def test_rerun_skips_finished_steps(trained):
    _, cfg, _ = trained
    again = run_curriculum(cfg, CurriculumOptions(progress=False))
    status = {s.stage: s.status for s in again.steps}
    assert status["labels"] == "skipped" and status["stage1"] == "skipped" and status["stage2"] == "skipped"


def test_interrupted_stage_resumes_only_when_asked(trained, tmp_path):
    tmp, _, _ = trained
    cfg = small_config(tmp, **{"stage2.overrides.train.steps": 90})  # stage 2 now unfinished (60 of 90)
    with pytest.raises(CurriculumError, match="unfinished run .* pass --resume"):
        run_curriculum(cfg, CurriculumOptions(progress=False))
    resumed = run_curriculum(cfg, CurriculumOptions(resume=True, progress=False))
    assert {s.stage: s.status for s in resumed.steps}["stage2"] == "resumed"
    assert latest_checkpoint(tmp / "stage2").name == "step_00000090.pt"


def test_demo_runs_at_the_smallest_size(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pgov3d_ros.demo", "--quick", "--out", str(tmp_path / "demo")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| class | trained name | points | precision | recall | never-trained name | points |" in out.stdout
    assert (tmp_path / "demo" / "map.npz").exists() and (tmp_path / "demo" / "query_result.ply").exists()


def test_a_setting_added_after_a_run_is_a_change_only_when_asked_off_its_default():
    """A stage trained before `data.augment.jitter` existed (its stored config lacks the key) stays
    valid while the key asks for the code's default; asking for anything else is a change."""
    from pgov3d_core.training.stage1_data import PartialSceneConfig

    defaults = section_defaults({"data": PartialSceneConfig})
    assert defaults["data.augment.jitter"] == [0.0, 0.0] and defaults["data.paste.count"] == 0
    old = {"data": {"voxel_size": 0.1, "augment": {"thin": [0.02, 0.06]}}}
    new = {"data": {"voxel_size": 0.1, "augment": {"thin": [0.02, 0.06], "jitter": [0.0, 0.0]},
                    "paste": {"count": 0}}}
    assert changed_settings(old, new, defaults) == []
    assert changed_settings(old, new) == ["data.augment.jitter: None -> [0.0, 0.0]", "data.paste.count: None -> 0"]
    new["data"]["paste"]["count"] = 4
    assert changed_settings(old, new, defaults) == ["data.paste.count: None -> 4"]
    # A key the requested config drops is still a change (the stored run used a value the code may
    # no longer default to).
    assert changed_settings(new, old, defaults) == ["data.augment.jitter: [0.0, 0.0] -> None",
                                                    "data.paste.count: 4 -> None"]


def test_model_and_loss_keys_missing_from_a_finished_run_read_as_what_it_used():
    """Model keys the stored config lacks are compared with the architecture the checkpoint
    resolved (`model_config`), loss keys with the losses' defaults."""
    from pgov3d_core.models import resolve_model_config

    ckpt = {"model_config": resolve_model_config({"preset": "tiny", "out_channels": 384})}
    defaults = checkpoint_defaults(ckpt)
    assert defaults["model.head_channels"] == 0 and defaults["model.enc_channels"] == [16, 32, 48]
    old = {"model": {"preset": "tiny"}, "loss": {}}
    same = {"model": {"preset": "tiny", "head_channels": 0, "enc_channels": [16, 32, 48]},
            "loss": {"lambda": 0.2, "class_balance": 0.0}}
    assert changed_settings(old, same, defaults) == []
    other = {"model": {"preset": "tiny", "head_channels": 128}, "loss": {"lambda": 0.0}}
    assert changed_settings(old, other, defaults) == ["loss.lambda: None -> 0.0", "model.head_channels: None -> 128"]


def test_finished_stage_trained_with_other_settings_is_not_reused(trained):
    tmp, _, _ = trained
    cfg = small_config(tmp, **{"stage2.overrides.pseudo.confidence": 0.6})
    with pytest.raises(CurriculumError, match=r"stage2 .* other settings \(pseudo\.confidence: 0\.5 -> 0\.6\).*"
                                              r"--from-stage stage2"):
        run_curriculum(cfg, CurriculumOptions(progress=False))
    # Settings of how a run reports are not what it learnt, nor is the same folder written another way.
    same_folder = {"data": {"root": f"{tmp}/stage1/../scenes"}}
    assert changed_settings({"data": {"root": str(tmp / "scenes")}}, same_folder) == []
    assert changed_settings({"data": {"root": str(tmp / "scenes")}}, {"data": {"root": str(tmp / "other")}}) == [
        f"data.root: {str(tmp / 'scenes')!r} -> {str(tmp / 'other')!r}"]
    cfg = small_config(tmp, **{"stage2.overrides.train.log_every": 3, "stage1.overrides.train.tensorboard": True})
    status = {s.stage: s.status for s in run_curriculum(cfg, CurriculumOptions(progress=False)).steps}
    assert status["stage1"] == "skipped" and status["stage2"] == "skipped"
