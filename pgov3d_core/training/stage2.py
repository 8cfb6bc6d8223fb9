"""Stage 2 of the curriculum (paper §3.2): fine-tuning on complete scene clouds against the
stage-1 model's point-wise pseudo-labels.

  1. Scene vocabulary C = union of the scene's frame entities (the same label source as stage 1),
     normalised (`pseudo_labels.scene_vocabulary`).
  2. Pseudo-labels: the stage-1 model on the full cloud under repeated random grid sampling,
     probabilities averaged, low-confidence points ignored (`pseudo_labels`), cached per scene.
  3. Training: the alignment loss of every pseudo-labelled point against the text embedding of its
     entity (Eq. 2 on full scenes; no frame pairs, so no consistency term), with the generic
     Trainer, initialised from the stage-1 checkpoint (`train.init_from`) or from scratch.

Config sections: run_dir, model (only for from-scratch runs; otherwise the stage-1 checkpoint's
architecture), text_encoder, data (scenes | root, labels, voxel_size, max_points, augment),
pseudo (checkpoint, voxel_size, temperature, confidence, min_passes, max_passes), loss
(class_balance: 0 = Eq. 2's plain mean, see losses.py), train, dist.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pgov3d_core.config import from_section, get, merge, section
from pgov3d_core.data.scene import Scene, SceneError
from pgov3d_core.geometry import random_grid_sample
from pgov3d_core.inference import GRID_Z_SHIFT_VOXELS, PointFeaturePredictor
from pgov3d_core.labelling.text_encoder import TextEncoder
from pgov3d_core.losses import DEFAULT_CLASS_BALANCE
from pgov3d_core.models import build_model, resolve_model_config
from pgov3d_core.models.batch import VoxelCloud, collate_clouds, voxelize_cloud
from pgov3d_core.models.inputs import check_full_cloud_inputs, point_inputs
from pgov3d_core.training.augment import Augmentation, AugmentConfig
from pgov3d_core.training.checkpoint import load_checkpoint
from pgov3d_core.training.distributed import barrier, init_distributed, local_process_count, run_in_processes
from pgov3d_core.training.labels import FrameLabelSource, make_label_source
from pgov3d_core.training.objective import (
    AlignmentObjective,
    LabelledBatch,
    TextEmbeddingBank,
    batch_vocabulary,
    remap_labels,
)
from pgov3d_core.training.pseudo_labels import (
    PseudoLabels,
    cache_path,
    load_pseudo_labels,
    pseudo_label_points,
    save_pseudo_labels,
    scene_vocabulary,
)
from pgov3d_core.training.stage1 import resolve_scenes
from pgov3d_core.training.stage1_data import sample_settings
from pgov3d_core.training.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class PseudoConfig:
    checkpoint: str | None = None  # the stage-1 model that labels the scenes
    voxel_size: float | None = 0.05  # grid of the repeated random sampling; null: one pass over every point
    temperature: float = 0.01  # softmax(cos / T)
    confidence: float = 0.5  # averaged top probability below this → ignored
    min_passes: int = 2
    max_passes: int | None = 16
    rotate: bool = True  # each pass at its own random angle about z (pseudo_labels.py)
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> PseudoConfig:
        return from_section(cls, d, "pseudo")


def scene_entity_vocabulary(scene: Scene, source: FrameLabelSource) -> list[str]:
    """Union C of the entity names present in the scene's frames (C_i of every frame)."""
    names_per_frame = []
    for fid in scene.frame_ids:
        labels, names = source.frame_labels(scene, fid)
        present = {names[k] for k in set(labels[labels >= 0].ravel().tolist())}
        names_per_frame.append(sorted(present))
    return scene_vocabulary(names_per_frame)


def pseudo_label_tag(predictor: PointFeaturePredictor, pcfg: PseudoConfig, checkpoint: str | os.PathLike) -> str:
    """Cache key: which model (file and step) and which settings produced the labels (the
    inference grid's phase too: labels cached before it moved are not reused)."""
    key = f"{Path(checkpoint).resolve()}|{predictor.checkpoint_step}|{pcfg}|grid_z_shift={GRID_Z_SHIFT_VOXELS}"
    return "stage1_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def generate_pseudo_labels(
    scenes: list[Scene],
    predictor: PointFeaturePredictor,
    encoder: TextEncoder,
    source: FrameLabelSource,
    pcfg: PseudoConfig,
    tag: str,
    progress: bool = True,
) -> list[dict]:
    """Pseudo-label every scene's cloud (cached; valid caches are reused). Returns per-scene stats."""
    from tqdm import tqdm

    stats = []
    for scene in tqdm(scenes, desc="pseudo-labels", disable=not progress, unit="scene"):
        cloud = scene.cloud()
        if cloud is None:
            raise SceneError(f"{scene.root}: stage 2 needs the full-scene cloud scene.ply")
        vocabulary = scene_entity_vocabulary(scene, source)
        path = cache_path(scene.root, tag)
        pl = load_pseudo_labels(path, n_points=len(cloud.xyz), vocabulary=vocabulary)
        reused = pl is not None
        if pl is None:
            xyz = torch.from_numpy(cloud.xyz)
            rgb = torch.from_numpy(cloud.rgb)
            text = encoder.encode(vocabulary)
            g = torch.Generator().manual_seed(pcfg.seed)
            pl = pseudo_label_points(
                predictor.subset_features(xyz, rgb),
                xyz, text, vocabulary, voxel_size=pcfg.voxel_size, temperature=pcfg.temperature,
                min_passes=pcfg.min_passes, max_passes=pcfg.max_passes,
                confidence_threshold=pcfg.confidence, generator=g, rotate_z=pcfg.rotate,
            )
            save_pseudo_labels(path, pl)
        kept = float((pl.labels >= 0).mean()) if len(pl.labels) else 0.0
        stats.append({"scene": str(scene.root), "points": len(pl.labels), "vocabulary": len(vocabulary),
                      "labelled_fraction": kept, "cached": reused})
    return stats


# ------------------------------------------------------------------ full-scene training data


@dataclass
class FullSceneConfig:
    voxel_size: float | None = None  # network voxel (m); None: the stage-1 checkpoint's (run_stage2 fills it in)
    max_points: int | None = 200_000  # random spatial crop (a ball around a random point) beyond this
    augment: AugmentConfig = section(AugmentConfig)

    @classmethod
    def from_dict(cls, d: dict | None) -> FullSceneConfig:
        """The stage-2 `data` settings (`sample_settings` removes the scene-source keys first)."""
        return from_section(cls, d, "data")


@dataclass
class FullSceneSample:
    cloud: VoxelCloud
    labels: torch.Tensor  # (N,) int64 into names, -1 = ignored
    names: list[str]


class FullSceneDataset:
    """Sample source of pseudo-labelled full scenes (one scene per sample)."""

    def __init__(self, scenes: list[Scene], tag: str, cfg: FullSceneConfig, inputs=("color",)):
        self.cfg = cfg
        self.inputs = check_full_cloud_inputs(inputs)  # the model's (models/inputs.py), not a user setting
        self.items: list[tuple[torch.Tensor, torch.Tensor, PseudoLabels]] = []
        for scene in scenes:
            cloud = scene.cloud()
            pl = load_pseudo_labels(cache_path(scene.root, tag), n_points=None if cloud is None else len(cloud.xyz))
            if cloud is None or pl is None:
                raise SceneError(f"{scene.root}: no valid pseudo-labels ({tag}); run the pseudo-label step")
            self.items.append((torch.from_numpy(cloud.xyz), torch.from_numpy(cloud.rgb), pl))

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int, generator: torch.Generator) -> FullSceneSample:
        xyz, rgb, pl = self.items[index]
        labels = torch.from_numpy(pl.labels).long()
        if self.cfg.max_points is not None and xyz.shape[0] > self.cfg.max_points:
            centre = xyz[int(torch.randint(xyz.shape[0], (1,), generator=generator))]
            keep = torch.argsort(((xyz - centre) ** 2).sum(1))[: self.cfg.max_points]
            xyz, rgb, labels = xyz[keep], rgb[keep], labels[keep]
        thin = self.cfg.augment.thin_cell(generator)
        if thin > 0:
            keep = random_grid_sample(xyz, thin, generator)
            xyz, rgb, labels = xyz[keep], rgb[keep], labels[keep]
        aug = Augmentation.sample(self.cfg.augment, generator)
        pts = self.cfg.augment.jittered(aug.points(xyz, xyz.mean(dim=0)), generator)
        feats = point_inputs(self.inputs, aug.colors(rgb.to(torch.float32) / 255.0), pts)
        return FullSceneSample(voxelize_cloud(pts, feats, self.cfg.voxel_size), labels, pl.vocabulary)

    def collate(self, samples: list[FullSceneSample]) -> LabelledBatch:
        """One cloud per scene and no consistency pairs (so the objective's consistency term is 0)."""
        vocabulary, lookup = batch_vocabulary(s.names for s in samples)
        labels = [remap_labels(s.labels, s.names, lookup) for s in samples]
        return LabelledBatch(collate_clouds([s.cloud for s in samples]), torch.cat(labels), vocabulary,
                             torch.zeros((0, 2), dtype=torch.int64))


# ------------------------------------------------------------------ orchestration


def run_stage2(cfg: dict, run_dir: str | os.PathLike | None = None, resume: bool | str = False,
               progress: bool = True) -> Trainer | None:
    """Pseudo-label the training scenes with the stage-1 checkpoint, then fine-tune (from it, or
    from scratch when train.init_from is null and `from_scratch` is set). Returns the Trainer, or
    None when `dist.processes` > 1 made it spawn the processes that trained (distributed.py)."""
    processes = local_process_count(cfg)
    if processes > 1:
        run_in_processes(processes, run_stage2, cfg, run_dir, resume, progress)
        return None
    ctx = init_distributed(get(cfg, "dist.backend", "auto"), get(cfg, "dist.device", "auto"))
    pcfg = PseudoConfig.from_dict(cfg.get("pseudo"))
    if not pcfg.checkpoint:
        raise ValueError("pseudo.checkpoint: the stage-1 checkpoint that produces the pseudo-labels is required")
    data_cfg = cfg.get("data") or {}
    scenes = [Scene(p) for p in resolve_scenes(data_cfg, ctx)]
    predictor = PointFeaturePredictor.from_checkpoint(pcfg.checkpoint, ctx.device)
    # No text_encoder section: the stage-1 run's own (its config is in the checkpoint), so the
    # pseudo-labels and the fine-tuning targets live in the embedding space stage 1 trained into.
    encoder = TextEncoder(cfg.get("text_encoder") or predictor.text_encoder_config or {})
    if predictor.text_encoder_identity and predictor.text_encoder_identity != encoder.identity:
        raise ValueError(f"stage-1 checkpoint was trained against text encoder {predictor.text_encoder_identity!r}, "
                         f"but stage 2 is configured with {encoder.identity!r}")
    tag = pseudo_label_tag(predictor, pcfg, pcfg.checkpoint)
    # Each process labels its share of the scenes (a scene's labels depend only on its cloud and
    # pcfg.seed, so the share does not change them); all wait until every cache is written.
    mine = scenes[ctx.rank::ctx.world_size]
    if mine:
        for s in generate_pseudo_labels(mine, predictor, encoder, make_label_source(data_cfg.get("labels")),
                                        pcfg, tag, progress and ctx.is_main):
            log.info("pseudo-labels %s: %d points, %d entities, %.0f%% confident%s", s["scene"], s["points"],
                     s["vocabulary"], 100 * s["labelled_fraction"], " (cached)" if s["cached"] else "")
    barrier(ctx)
    scene_cfg = FullSceneConfig.from_dict(sample_settings(data_cfg))
    if scene_cfg.voxel_size is None:
        # The network voxel is part of what stage 1 learnt (its receptive field in metres): keep it,
        # and write it into the config this run's checkpoints store, which inference reads.
        scene_cfg.voxel_size = predictor.voxel_size
        cfg = merge(cfg, {"data": {"voxel_size": predictor.voxel_size}})
    init_from = get(cfg, "train.init_from")
    if init_from:
        model_cfg = resolve_model_config(load_checkpoint(init_from)["model_config"])
    else:
        model_cfg = resolve_model_config(dict(cfg.get("model") or load_checkpoint(pcfg.checkpoint)["model_config"]))
    dataset = FullSceneDataset(scenes, tag, scene_cfg, model_cfg["inputs"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(get(cfg, "train.seed", 0)))
        model: nn.Module = build_model(model_cfg)
    objective = AlignmentObjective(TextEmbeddingBank(encoder, ctx.device), lam=0.0,
                                   class_balance=float(get(cfg, "loss.class_balance", DEFAULT_CLASS_BALANCE)))
    trainer = Trainer(model, dataset, objective, cfg, run_dir or cfg.get("run_dir") or "outputs/stage2", ctx,
                      model_config=model_cfg, stage="stage2")
    trainer.fit(resume)
    return trainer
