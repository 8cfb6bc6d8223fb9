"""The whole PGOV3D curriculum as one resumable pipeline (pgov3d_core.tools.run_curriculum):

    data → labels → stage1 → stage2 → eval

data    synthetic rooms are generated when the config asks for them (complete scenes are kept)
labels  pixel-wise entities for every training frame (the labelling pipeline's resumable cache;
        `labelling.labeller: oracle` without model weights, `models` with them)
stage1  partial-scene pre-training (skipped when finished with the settings asked for)
stage2  pseudo-labels from the stage-1 model + full-scene fine-tuning (the same)
eval    zero-shot segmentation of the held-out scenes' clouds with each trained model: mIoU,
        mAcc, per-class IoU, optional base/novel hIoU, and with `evaluation.query_texts` (class →
        text) the same under those texts, e.g. names never used as training labels ("<stage>,
        query texts"), and with `evaluation.repeated_sampling.passes: N` by class distributions
        averaged over N repeated grid sampling passes ("<stage>, N passes"); markdown/JSON report + PNGs
        in report/ (report_nocons/, report_scratch/ for the ablation runs)

A training stage with an unfinished run (checkpoints below its final step) continues only with
`resume=True`; `from_stage` starts that stage and every later one over, moving the old run folders
aside (nothing trained is deleted).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.config import apply_overrides, from_section, get, load_config, merge
from pgov3d_core.data.scene import Scene
from pgov3d_core.inference import PointFeaturePredictor, predict_classes
from pgov3d_core.labelling.text_encoder import TextEncoder
from pgov3d_core.scene_evaluation import (
    SegmentationMetrics,
    base_novel_metrics,
    render_top_down,
    write_report,
)
from pgov3d_core.training.checkpoint import CheckpointError, checkpoint_dir, latest_checkpoint, load_checkpoint
from pgov3d_core.training.distributed import WorkerError
from pgov3d_core.training.pseudo_labels import repeated_sampling_probabilities
from pgov3d_core.training.stage1_data import scene_paths
from pgov3d_core.weights import WeightsError

log = logging.getLogger(__name__)

STAGES = ("data", "labels", "stage1", "stage2", "eval")


@dataclass
class CurriculumOptions:
    from_stage: str | None = None
    resume: bool = False
    no_consistency: bool = False
    no_stage2: bool = False
    stage2_from_scratch: bool = False
    progress: bool = True


@dataclass
class StepResult:
    stage: str
    status: str  # ran | skipped | resumed
    seconds: float
    detail: str = ""


@dataclass
class CurriculumResult:
    run_dir: Path
    steps: list[StepResult] = field(default_factory=list)
    metrics: dict[str, SegmentationMetrics] = field(default_factory=dict)
    base_novel: dict[str, dict] = field(default_factory=dict)
    report: dict[str, Path] = field(default_factory=dict)


class CurriculumError(RuntimeError):
    pass


class StaleStageError(CurriculumError):
    """A finished training stage was trained with other settings than those asked for now."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


# What a curriculum run reports as "error: <message>" rather than a traceback (bad config, data,
# scenes written with other settings, checkpoints, weights, a failed worker): the CLI and the demo.
RUN_ERRORS = (CurriculumError, CheckpointError, WeightsError, WorkerError, FileNotFoundError, ValueError)


@dataclass
class RepeatedSamplingConfig:
    """`evaluation.repeated_sampling`: also score each model with the paper's repeated grid sampling
    (§3.2, what stage 2 smooths its pseudo-labels with) at test time: every point's class
    distribution averaged over passes that each keep one random point per voxel, each pass turned
    by its own random angle about z. Every point is kept at least once (the covering passes run in
    full), so all points get a prediction."""

    passes: int = 0  # at least this many passes; 0: single pass only
    voxel_size: float = 0.05
    temperature: float = 0.01  # softmax(cos / T) before averaging
    rotate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.passes < 0 or self.voxel_size <= 0 or self.temperature <= 0:
            raise ValueError("evaluation.repeated_sampling needs passes >= 0, voxel_size > 0 and temperature > 0")

    @classmethod
    def from_dict(cls, d: dict | None) -> RepeatedSamplingConfig:
        return from_section(cls, d, "evaluation.repeated_sampling")


def stage_config(cfg: dict, name: str) -> dict:
    """The config of training stage `name` ("stage1", "stage2") as the curriculum section gives it:
    the file `config`, the section's other keys merged over it, then `overrides` (dotted keys or
    nested mappings, e.g. `train.steps: 400` or, from the command line,
    `stage1.overrides.train.steps=4`) merged key by key: a key overridden leaves its siblings."""
    section = cfg.get(name) or {}
    base = load_config(section["config"]) if section.get("config") else {}
    out = merge(base, {k: v for k, v in section.items() if k not in ("config", "overrides")})
    return apply_overrides(out, section.get("overrides") or {})


def _final_step(run_dir: Path) -> int | None:
    path = latest_checkpoint(run_dir)
    return None if path is None else int(load_checkpoint(path)["step"])


def move_aside(path: Path) -> None:
    """Rename a run folder to `<name>.old-<time>` (a run is never deleted); nothing if it is absent."""
    if path.exists():
        target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(target)
        log.warning("moved the previous %s run aside to %s", path.name, target)


# Settings that change how a run executes or reports, not what it learns: a finished stage stays
# valid across them (train.steps: a finished run with more steps than asked is kept, as before).
_RUN_ONLY_SETTINGS = ("run_dir", "dist", "train.steps", "train.progress", "train.log_every", "train.tensorboard",
                      "train.threads", "train.num_workers", "train.ckpt_every", "train.keep_checkpoints",
                      "data.frame_cache_mb")


def _flat(d, prefix: str = "") -> dict[str, object]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _as_lists(v):
    """Tuples as lists, as YAML writes them (dataclass defaults hold tuples)."""
    return [_as_lists(x) for x in v] if isinstance(v, (list, tuple)) else v


def section_defaults(sections: dict[str, type]) -> dict[str, object]:
    """Dotted keys -> the code's defaults of config sections backed by dataclasses, e.g.
    {"data": PartialSceneConfig} -> {"data.augment.jitter": [0.0, 0.0], ...}."""
    return {k: _as_lists(v) for name, cls in sections.items() for k, v in _flat(asdict(cls()), name).items()}


def checkpoint_defaults(ckpt: dict) -> dict[str, object]:
    """Dotted keys -> what a finished run used for model and loss settings its stored config may
    lack: the architecture it resolved (the checkpoint's `model_config`, preset fields filled in)
    and the losses' code defaults (the paper's λ, no entity balancing)."""
    from pgov3d_core.losses import DEFAULT_CLASS_BALANCE, DEFAULT_LAMBDA

    out = {f"model.{k}": _as_lists(v) for k, v in (ckpt.get("model_config") or {}).items()}
    out.update({"loss.lambda": DEFAULT_LAMBDA, "loss.class_balance": DEFAULT_CLASS_BALANCE})
    return out


def changed_settings(trained: dict, requested: dict, defaults: dict[str, object] | None = None) -> list[str]:
    """Dotted keys whose values differ between a finished run's stored config and the requested one
    ("key: old -> new"), other than `_RUN_ONLY_SETTINGS`. A key the finished run's config lacks is
    unchanged when the requested value is its default in `defaults`: a setting added to the code
    after that run arrives with its default, the behaviour from before it existed, and must not make
    every finished stage stale."""
    a, b = _flat(trained), _flat(requested)
    defaults = defaults or {}
    for k, v in b.items():
        if k not in a and k in defaults and _as_lists(v) == defaults[k]:
            a[k] = v

    def run_only(key: str) -> bool:
        return any(key == s or key.startswith(s + ".") for s in _RUN_ONLY_SETTINGS)

    def same(x, y) -> bool:  # paths written relative once and absolute the next time are the same setting
        if x == y:
            return True
        return isinstance(x, str) and isinstance(y, str) and os.path.exists(x) and os.path.exists(y) \
            and os.path.samefile(x, y)

    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if not run_only(k) and not same(a.get(k), b.get(k))]


def _training_stage(name: str, run_dir: Path, steps: int, opts: CurriculumOptions, forced: bool, train_fn,
                    cfg: dict | None = None, defaults: dict[str, object] | None = None) -> str:
    """Run (or skip, or resume) a training stage; returns the status. A finished stage is skipped
    only if it was trained with the settings asked for now (`cfg`): otherwise rerunning with, say, a
    new stage-2 setting would report the old model under the new name."""
    if forced:
        move_aside(run_dir)
    done = _final_step(run_dir) if checkpoint_dir(run_dir).exists() else None
    if done is not None and done >= steps:
        changed = []
        if cfg is not None:
            ckpt = load_checkpoint(latest_checkpoint(run_dir))
            changed = changed_settings(ckpt["config"], cfg, {**checkpoint_defaults(ckpt), **(defaults or {})})
        if changed:
            raise StaleStageError(
                f"{name} in {run_dir} was trained with other settings ({'; '.join(changed[:6])}"
                f"{'; ...' if len(changed) > 6 else ''}): pass --from-stage {name} to train it again (the old run "
                "is moved aside) or use another run_dir", name
            )
        return "skipped"
    if done is not None and not opts.resume:
        raise CurriculumError(
            f"{name} has an unfinished run in {run_dir} (step {done} of {steps}): pass --resume to continue it "
            f"or --from-stage {name} to start it over"
        )
    train_fn(resume=done is not None)
    return "resumed" if done is not None else "ran"


def evaluate_checkpoint(
    checkpoint: Path, scenes: list[Scene], encoder: TextEncoder, class_names: list[str], device: str = "cpu",
    render_dir: Path | None = None, tag: str = "", query_texts: dict[str, str] | None = None,
    sampling: RepeatedSamplingConfig | None = None,
) -> tuple[SegmentationMetrics, SegmentationMetrics | None]:
    """Zero-shot segmentation of the scenes' full clouds: argmax cosine against the class names'
    text embeddings; metrics over all scenes' points (one confusion matrix). One network pass over
    each whole cloud, or with `sampling` (passes > 0) the argmax of the class distributions averaged
    over repeated grid sampling passes (`RepeatedSamplingConfig`).

    With `query_texts` (class → text; classes not in it keep their name) the same point features
    are also classified against those texts — names the network need not have seen in training —
    giving the second metrics (None without `query_texts`). Ground truth is always the class ids."""
    unknown = sorted(set(query_texts or {}) - set(class_names))
    if unknown:
        raise CurriculumError(f"evaluation.query_texts names classes {unknown} that the evaluation classes "
                              f"{class_names} do not have")
    predictor = PointFeaturePredictor.from_checkpoint(checkpoint, device)
    text = encoder.encode(class_names)
    query_text = encoder.encode([query_texts.get(c, c) for c in class_names]) if query_texts else None
    preds, query_preds, gts = [], [], []
    for scene in scenes:
        cloud = scene.cloud()
        if cloud is None:
            raise CurriculumError(f"{scene.root}: evaluation needs the scene cloud scene.ply with labels")
        xyz, rgb = torch.from_numpy(cloud.xyz), torch.from_numpy(cloud.rgb)
        if sampling is not None and sampling.passes > 0:
            texts = [text] + ([query_text] if query_text is not None else [])
            probs, _ = repeated_sampling_probabilities(
                predictor.subset_features(xyz, rgb), xyz, texts,
                voxel_size=sampling.voxel_size, temperature=sampling.temperature, min_passes=sampling.passes,
                generator=torch.Generator().manual_seed(sampling.seed), rotate_z=sampling.rotate)
            pred = probs[0].argmax(dim=1).numpy()
            if query_text is not None:
                query_preds.append(probs[1].argmax(dim=1).numpy())
        else:
            feats = predictor.features(xyz, rgb)
            pred = predict_classes(feats, text).numpy()
            if query_text is not None:
                query_preds.append(predict_classes(feats, query_text).numpy())
        preds.append(pred)
        gts.append(cloud.labels)
        if render_dir is not None:
            render_top_down(render_dir / f"top_down_{tag}_{scene.root.name}.png", cloud.xyz, pred, cloud.labels,
                            class_names)
    gt = np.concatenate(gts)
    canonical = SegmentationMetrics.from_predictions(np.concatenate(preds), gt, class_names)
    queried = (SegmentationMetrics.from_predictions(np.concatenate(query_preds), gt, class_names)
               if query_text is not None else None)
    return canonical, queried


def run_curriculum(cfg: dict, opts: CurriculumOptions | None = None) -> CurriculumResult:
    opts = opts or CurriculumOptions()
    if opts.from_stage is not None and opts.from_stage not in STAGES:
        raise CurriculumError(f"--from-stage must be one of {', '.join(STAGES)}, got {opts.from_stage!r}")
    forced = set(STAGES[STAGES.index(opts.from_stage):]) if opts.from_stage else set()
    run_dir = Path(cfg.get("run_dir") or "outputs/curriculum")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = CurriculumResult(run_dir)
    data = cfg.get("data") or {}
    train_root, val_root = Path(data["train_root"]), Path(data["val_root"])

    def step(name: str, fn):
        t = time.monotonic()
        status, detail = fn()
        result.steps.append(StepResult(name, status, time.monotonic() - t, detail))
        log.info("[%s] %s %s", name, status, detail)

    # -- data
    def do_data():
        syn = data.get("synthetic")
        if not syn:
            return "skipped", "using existing scenes"
        from pgov3d_core.data.synthetic import generate_dataset

        kw = {k: v for k, v in syn.items() if k not in ("train_seeds", "val_seeds")}
        kw.setdefault("workers", len(os.sched_getaffinity(0)))  # rooms are independent: one per core
        tr = generate_dataset(train_root, syn["train_seeds"], **kw)
        va = generate_dataset(val_root, syn["val_seeds"], **kw)
        return "ran", f"{len(tr)} training and {len(va)} held-out synthetic scenes"

    step("data", do_data)
    train_scenes, val_scenes = scene_paths(train_root), scene_paths(val_root)
    if not train_scenes or not val_scenes:
        raise CurriculumError(f"no scenes under {train_root} or {val_root}")

    # -- labels
    lab = cfg.get("labelling") or {}

    def do_labels():
        from pgov3d_core.labelling.config import LabellingConfig
        from pgov3d_core.labelling.pipeline import label_scenes

        lcfg = LabellingConfig.load(lab.get("config")).merged(lab.get("overrides"))
        # Every frame: stage 1 reads the entities of its sampled frames and of their partner frames,
        # and stage 2 builds each scene's vocabulary from all of them.
        reports = label_scenes(train_root, lcfg, labeller=lab.get("labeller", "oracle"),
                               stride=1, progress=opts.progress, print_summary=False)
        failed = {f"{r.root.name}/{fid}": why for r in reports for fid, why in r.failed.items()}
        if failed:
            raise CurriculumError(f"labelling failed for {len(failed)} frames, e.g. {next(iter(failed.items()))}")
        written = sum(r.written for r in reports)
        return ("ran" if written else "skipped"), (f"{len(reports)} scenes, {written} frames labelled, "
                                                    f"{sum(r.cached for r in reports)} cached")

    step("labels", do_labels)

    # -- stage 1
    s1 = stage_config(cfg, "stage1")
    s1["data"] = merge(s1.get("data") or {}, {"root": str(train_root), "labels": "entities"})
    s1["data"].pop("synthetic", None)
    s1.get("data", {}).pop("scenes", None)
    suffix = "_nocons" if opts.no_consistency else ""
    if opts.no_consistency:
        s1 = merge(s1, {"loss": {"lambda": 0.0}})
    s1["train"] = merge(s1.get("train") or {}, {"progress": opts.progress})
    s1_dir = run_dir / f"stage1{suffix}"

    def do_stage1():
        from pgov3d_core.training.stage1 import run_stage1
        from pgov3d_core.training.stage1_data import PartialSceneConfig
        from pgov3d_core.training.trainer import TrainConfig

        status = _training_stage("stage1", s1_dir, int(get(s1, "train.steps")), opts, "stage1" in forced,
                                 lambda resume: run_stage1(s1, s1_dir, resume), s1,
                                 section_defaults({"data": PartialSceneConfig, "train": TrainConfig}))
        return status, str(s1_dir)

    step("stage1", do_stage1)
    s1_ckpt = latest_checkpoint(s1_dir)

    # -- stage 2
    s2_ckpt = None
    if not opts.no_stage2:
        s2 = stage_config(cfg, "stage2")
        s2["text_encoder"] = copy.deepcopy(s1.get("text_encoder"))
        s2["data"] = merge(s2.get("data") or {}, {"root": str(train_root), "labels": "entities"})
        s2["pseudo"] = merge(s2.get("pseudo") or {}, {"checkpoint": str(s1_ckpt)})
        s2["train"] = merge(s2.get("train") or {}, {"progress": opts.progress,
                                                    "init_from": None if opts.stage2_from_scratch else str(s1_ckpt)})
        if get(s2, "data.voxel_size") is None:
            # What run_stage2 fills in (the network voxel stage 1 learnt at), here so that the settings
            # a finished stage 2 is compared with are the ones it stored.
            s2["data"]["voxel_size"] = PointFeaturePredictor.from_checkpoint(s1_ckpt).voxel_size
        if opts.stage2_from_scratch:
            s2["model"] = load_checkpoint(s1_ckpt)["model_config"]
        s2_dir = run_dir / ("stage2" + suffix + ("_scratch" if opts.stage2_from_scratch else ""))

        def do_stage2():
            from pgov3d_core.training.stage2 import FullSceneConfig, PseudoConfig, run_stage2
            from pgov3d_core.training.trainer import TrainConfig

            status = _training_stage("stage2", s2_dir, int(get(s2, "train.steps")), opts, "stage2" in forced,
                                     lambda resume: run_stage2(s2, s2_dir, resume, progress=opts.progress), s2,
                                     section_defaults({"data": FullSceneConfig, "pseudo": PseudoConfig,
                                                       "train": TrainConfig}))
            return status, str(s2_dir)

        step("stage2", do_stage2)
        s2_ckpt = latest_checkpoint(s2_dir)

    # -- evaluation
    ev = cfg.get("evaluation") or {}

    def do_eval():
        scenes = [Scene(p) for p in val_scenes]
        class_names = list(ev.get("class_names") or scenes[0].class_names)
        encoder = TextEncoder(copy.deepcopy(s1.get("text_encoder")) or {})
        # An ablation's report beside the default run's, not over it (stage folders are named alike).
        report_dir = run_dir / f"report{suffix}{'_scratch' if opts.stage2_from_scratch else ''}"
        runs = {"stage 1": s1_ckpt} | ({"stage 2": s2_ckpt} if s2_ckpt else {})
        query_texts = dict(ev.get("query_texts") or {})
        sampling = RepeatedSamplingConfig.from_dict(ev.get("repeated_sampling"))
        for name, ckpt in runs.items():
            result.metrics[name], queried = evaluate_checkpoint(
                ckpt, scenes, encoder, class_names, render_dir=report_dir, tag=name.replace(" ", ""),
                query_texts=query_texts)
            if queried is not None:
                result.metrics[f"{name}, query texts"] = queried
            for split in ev.get("base_novel_splits") or []:
                result.base_novel.setdefault(name, {})[split] = asdict(base_novel_metrics(result.metrics[name], split))
        if sampling.passes > 0:  # after the single-pass rows, so the report lists those first
            for name, ckpt in runs.items():
                result.metrics[f"{name}, {sampling.passes} passes"], _ = evaluate_checkpoint(
                    ckpt, scenes, encoder, class_names, sampling=sampling)
        result.report = write_report(report_dir, result.metrics, title="pgov3d curriculum: held-out scenes",
                                     extra={"base_novel": result.base_novel, "query_texts": query_texts,
                                            "repeated_sampling": asdict(sampling),
                                            "checkpoints": {k: str(v) for k, v in runs.items()}})
        return "ran", str(report_dir)

    step("eval", do_eval)
    return result


def summary_table(result: CurriculumResult) -> str:
    lines = ["| step | status | time |", "| --- | --- | --- |"]
    lines += [f"| {s.stage} | {s.status} | {s.seconds:.0f} s |" for s in result.steps]
    lines += ["", "| model | mIoU | mAcc | overall acc |", "| --- | --- | --- | --- |"]
    for name, m in result.metrics.items():
        lines.append(f"| {name} | {100 * m.miou:.1f} | {100 * m.macc:.1f} | {100 * m.overall_acc:.1f} |")
    for name, splits in result.base_novel.items():
        for split, bn in splits.items():
            lines.append(f"| {name} {split} | mIoU^B {100 * bn['miou_base']:.1f} | mIoU^N {100 * bn['miou_novel']:.1f} "
                         f"| hIoU {100 * bn['hiou']:.1f} |")
    return "\n".join(lines)
