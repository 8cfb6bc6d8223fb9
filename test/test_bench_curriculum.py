"""bench/bench_curriculum.py: the ablation table (the runs themselves are the benchmark, outside CI)."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_table_prints_deltas_and_signs(load_script):
    bench = load_script("bench/bench_curriculum")
    results = {
        "stage 1 (λ=0.2)": {"miou": 0.30, "macc": 0.40},
        "stage 2 (from stage 1, repeated sampling)": {"miou": 0.35, "macc": 0.42},
        "stage 1 (λ=0)": {"miou": 0.32, "macc": 0.41},
        "stage 2 from scratch": {"miou": 0.20, "macc": 0.30},
        "stage 2 (one pseudo-label pass)": {"miou": 0.34, "macc": 0.45},
    }
    table = bench.format_tables(results)
    assert "| Table 4: stage 2 > stage 1 | +5.0 | +2.0 | yes |" in table
    assert "| Table 5: λ=0.2 > λ=0 | -2.0 | -1.0 | no |" in table
    assert "| Table 6: from stage 1 > from scratch | +15.0 | +12.0 | yes |" in table
    assert "| §3.2: repeated sampling > one pass | +1.0 | -3.0 | yes |" in table
    # every variant the ablations compare is one the benchmark runs
    assert {v for _, a, b in bench.ABLATIONS for v in (a, b)} == set(results)
    # the benchmark's rooms are its own, and the budget preset stays small
    assert all("200" in s or "300" in s for s in bench.SEEDS)
    assert any(s.startswith("stage1.overrides.train.steps=") for s in bench.PRESETS["budget"])


def test_one_pass_variant_is_one_network_pass_over_every_point(load_script):
    # Not one grid-sampling pass: that labels one point per 5 cm cell, nearly all the supervision
    # at a 10 cm network voxel, and cannot show what the repeated sampling adds.
    assert load_script("bench/bench_curriculum").ONE_PASS == ["stage2.overrides.pseudo.voxel_size=null"]


@pytest.mark.slow
def test_rerun_retrains_only_what_a_changed_setting_touches(tmp_path, capsys, load_script):
    bench = load_script("bench/bench_curriculum")
    smoke = bench.PRESETS["smoke"]
    bench.run_ablations(tmp_path, smoke, [])
    s1 = sorted((tmp_path / "main" / "stage1" / "checkpoints").glob("*.pt"))
    s1_mtimes = [p.stat().st_mtime_ns for p in s1]
    # A stage-2 setting changed since: stage 2 of each variant is trained again, stage 1 is reused.
    results = bench.run_ablations(tmp_path, smoke, ["stage2.overrides.pseudo.confidence=0.6"])
    assert set(results) == {v for _, a, b in bench.ABLATIONS for v in (a, b)}
    assert [p.stat().st_mtime_ns for p in s1] == s1_mtimes
    err = capsys.readouterr().err
    assert "retraining: stage2" in err and "pseudo.confidence: 0.5 -> 0.6" in err
    assert "retraining: stage1" not in err
    cfg = torch.load(tmp_path / "main" / "stage2" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert cfg["pseudo"]["confidence"] == 0.6
    assert list(tmp_path.glob("main/stage2.old-*"))  # the earlier run moved aside, not deleted
    # --config: the same ablations from another curriculum file; the balanced one changes both
    # stages' loss, so both are trained again and carry it.
    bench.run_ablations(tmp_path, smoke, ["stage2.overrides.pseudo.confidence=0.6"],
                        config=ROOT / "config" / "curriculum_balanced.yaml")
    assert "retraining: stage1" in capsys.readouterr().err
    for stage in ("stage1", "stage2"):
        cfg = torch.load(tmp_path / "main" / stage / "checkpoints" / "last.pt", weights_only=True)["config"]
        assert cfg["loss"]["class_balance"] == 0.5
    cfg = torch.load(tmp_path / "one_pass" / "stage2" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert cfg["loss"]["class_balance"] == 0.5 and cfg["pseudo"]["voxel_size"] is None


def test_each_preset_has_its_own_default_run_folder(load_script):
    # A preset writes its scenes at its own size; a folder with another size's scenes is refused.
    bench = load_script("bench/bench_curriculum")
    folders = {name: bench.default_out(name) for name in bench.PRESETS}
    assert folders["full"].name == "bench_curriculum" and len(set(folders.values())) == len(bench.PRESETS)
