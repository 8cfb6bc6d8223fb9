"""Stage 1 of the curriculum (paper §3.1): pre-training on RGB-D partial scenes with
L = L_align + λ·L_cons. Builds the text encoder, data, model and objective from a config and
runs the generic Trainer.

Config sections used here (see config/stage1.yaml for every key with its default):
    run_dir, model, text_encoder, data (scenes | root | synthetic, labels, stage-1 data keys),
    loss.lambda, train, dist.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from pgov3d_core.config import get
from pgov3d_core.labelling.text_encoder import TextEncoder
from pgov3d_core.losses import DEFAULT_CLASS_BALANCE, DEFAULT_LAMBDA
from pgov3d_core.models import build_model, resolve_model_config
from pgov3d_core.training.distributed import (
    DistContext,
    barrier,
    init_distributed,
    local_process_count,
    run_in_processes,
)
from pgov3d_core.training.objective import AlignmentObjective, TextEmbeddingBank
from pgov3d_core.training.stage1_data import (
    PartialSceneConfig,
    PartialSceneDataset,
    sample_settings,
    scene_paths,
)
from pgov3d_core.training.trainer import Trainer

log = logging.getLogger(__name__)


def build_text_encoder(cfg: dict) -> TextEncoder:
    return TextEncoder(cfg.get("text_encoder") or {})


def resolve_scenes(data_cfg: dict, ctx: DistContext | None = None) -> list[Path]:
    """Scene folders of `data`: an explicit `scenes` list, every scene under `root`, or (with a
    `synthetic` block) the synthetic rooms generated under `root` first (rank 0 generates, the
    other ranks wait; generation skips complete scenes)."""
    ctx = ctx or DistContext()
    if data_cfg.get("scenes"):
        return [Path(p) for p in data_cfg["scenes"]]
    root = data_cfg.get("root")
    if not root:
        raise ValueError("data needs `scenes` (a list of scene folders) or `root` (a folder of scenes)")
    syn = data_cfg.get("synthetic")
    if syn:
        if ctx.is_main:
            from pgov3d_core.data.synthetic import generate_dataset

            syn = dict(syn)
            seeds = syn.pop("seeds")
            if isinstance(seeds, int):
                seeds = range(seeds)
            generate_dataset(root, seeds, **syn)
        barrier(ctx)
    paths = scene_paths(root)
    if not paths:
        raise FileNotFoundError(f"data.root {root}: no scene folders (color/, depth/, pose/) found")
    return paths


def stage1_data_config(cfg: dict) -> PartialSceneConfig:
    return PartialSceneConfig.from_dict(sample_settings(cfg.get("data")))


def build_stage1(cfg: dict, ctx: DistContext | None = None):
    """(model, dataset, objective, resolved model config, text encoder) for a stage-1 config."""
    ctx = ctx or DistContext()
    data_cfg = cfg.get("data") or {}
    dcfg = stage1_data_config(cfg)
    encoder = build_text_encoder(cfg)
    model_cfg = dict(cfg.get("model") or {})
    # The data settings (data.normals, data.height) say what the samples carry; the model config
    # records it as `inputs`, which stage 2, evaluation and the node read from the checkpoint.
    model_cfg.setdefault("inputs", list(dcfg.inputs))
    if model_cfg.get("out_channels", "auto") == "auto":
        model_cfg["out_channels"] = int(encoder.dim)
    if "in_channels" in model_cfg and int(model_cfg["in_channels"]) != dcfg.in_channels:
        raise ValueError(f"model.in_channels={model_cfg['in_channels']} but data gives {dcfg.in_channels} "
                         f"({' + '.join(dcfg.inputs)})")
    if list(model_cfg["inputs"]) != list(dcfg.inputs):
        raise ValueError(f"model.inputs={list(model_cfg['inputs'])} but the data settings give {list(dcfg.inputs)} "
                         "(data.normals, data.height)")
    if model_cfg["out_channels"] != encoder.dim:
        raise ValueError(f"model.out_channels={model_cfg['out_channels']} but the text encoder gives {encoder.dim}")
    full_model_cfg = resolve_model_config(model_cfg)
    seed = int(get(cfg, "train.seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # identical initial weights on every rank and every run
        model = build_model(full_model_cfg)
    dataset = PartialSceneDataset(resolve_scenes(data_cfg, ctx), data_cfg.get("labels", "oracle"), dcfg)
    lam = float(get(cfg, "loss.lambda", DEFAULT_LAMBDA))
    objective = AlignmentObjective(TextEmbeddingBank(encoder, ctx.device), lam,
                                   float(get(cfg, "loss.class_balance", DEFAULT_CLASS_BALANCE)))
    return model, dataset, objective, full_model_cfg, encoder


def make_stage1_trainer(cfg: dict, run_dir: str | os.PathLike | None = None, ctx: DistContext | None = None):
    ctx = ctx or init_distributed(get(cfg, "dist.backend", "auto"), get(cfg, "dist.device", "auto"))
    model, dataset, objective, model_cfg, _ = build_stage1(cfg, ctx)
    run_dir = run_dir or cfg.get("run_dir") or "runs/stage1"
    return Trainer(model, dataset, objective, cfg, run_dir, ctx, model_config=model_cfg, stage="stage1")


def run_stage1(cfg: dict, run_dir: str | os.PathLike | None = None, resume: bool | str = False) -> Trainer | None:
    """Build and train; returns the finished Trainer (its .history holds per-step metrics), or None
    when `dist.processes` > 1 made it spawn the processes that trained (distributed.py)."""
    processes = local_process_count(cfg)
    if processes > 1:
        run_in_processes(processes, run_stage1, cfg, run_dir, resume)
        return None
    trainer = make_stage1_trainer(cfg, run_dir)
    trainer.fit(resume)
    return trainer
