"""The generic trainer shared by both curriculum stages.

A stage supplies three things: a model (`models.build_model`), a sample source (`get(index,
generator)`, `collate(samples)`, `__len__`; see `sampling.SampleSource`) and an objective
(`objective(model, batch) -> losses.LossTerms`, plus `checkpoint_metadata()`). The trainer owns
everything else: step-seeded data loading, DDP, AdamW, the LR schedule, gradient clipping, mixed
precision on CUDA, checkpoints (atomic, weights_only-loadable, exact resume), a tqdm progress bar,
TensorBoard scalars and `metrics.jsonl` (one line per step: the loss terms, lr, grad norm).

Exact resume: model/optimiser/scheduler/scaler/RNG states are restored and the data of step s is a
function of (seed, s) only (`sampling`), so steps after the checkpoint reproduce an uninterrupted
run's losses: bit-exact where BLAS rounding does not depend on buffer alignment (Intel CPUs
with MKL_CBWR=AUTO,STRICT, which the training CLIs set), within a few float32 ulps where that mode
does not hold (seen once on an AMD EPYC: MKL's AVX2 kernels round by alignment, which differs in a
new process; test_stage1 measures the size of such drift), and on GPU up to non-deterministic
kernels.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from pgov3d_core.allocator import retain_freed_memory
from pgov3d_core.config import from_section
from pgov3d_core.fileio import atomic_write_bytes
from pgov3d_core.losses import LossTerms
from pgov3d_core.models import resolve_model_config
from pgov3d_core.training import checkpoint as ckpt_io
from pgov3d_core.training.distributed import DistContext, barrier, convert_cross_rank_batchnorm, mean_across_ranks
from pgov3d_core.training.sampling import SampleSource, SeededDataset, StepBatchSampler

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: Any) -> LossTerms: ...

    def checkpoint_metadata(self) -> dict: ...


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 2  # samples per process per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # cosine (linear warmup + cosine decay) | onecycle | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    grad_clip: float | None = 1.0  # max global grad norm; null disables
    amp: str = "auto"  # auto (fp16 on CUDA) | off | fp16 | bf16
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10  # TensorBoard + progress-bar refresh period (metrics.jsonl gets every step)
    ckpt_every: int = 100
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None  # torch intra-op threads per process (None: torch default)
    sync_bn: bool = False  # SyncBatchNorm across DDP ranks
    init_from: str | None = None  # checkpoint whose model weights start a fresh run (stage 2 from stage 1)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ValueError(f"schedule must be cosine, onecycle or constant, got {self.schedule!r}")
        if self.amp not in ("auto", "off", "fp16", "bf16"):
            raise ValueError(f"amp must be auto, off, fp16 or bf16, got {self.amp!r}")
        if self.steps < 1 or self.ckpt_every < 1 or self.log_every < 1:
            raise ValueError("steps, ckpt_every and log_every must be >= 1")

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        return from_section(cls, d, "train")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=cfg.steps,
            pct_start=min(cfg.warmup_steps / cfg.steps, 0.99) if cfg.warmup_steps else 0.05,
            anneal_strategy="cos", div_factor=10.0, final_div_factor=1.0 / max(cfg.min_lr_ratio, 1e-6) / 10.0,
            cycle_momentum=False,
        )
    warm, total, floor = cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio
    if cfg.schedule == "constant":
        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warm) if warm else 1.0
    else:
        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    return torch.float16  # auto and fp16: spconv's CUDA kernels support fp16


class Trainer:
    """Train `model` on `source` with `objective` under `cfg` (the full run config; the `train`
    section is read here). Writes checkpoints, metrics.jsonl and TensorBoard events to run_dir."""

    def __init__(
        self,
        model: nn.Module,
        source: SampleSource,
        objective: Objective,
        cfg: dict,
        run_dir: str | os.PathLike,
        dist_ctx: DistContext | None = None,
        model_config: dict | None = None,
        stage: str = "",
    ):
        self.cfg = cfg
        self.tcfg = TrainConfig.from_dict(cfg.get("train"))
        self.ctx = dist_ctx or DistContext()
        self.run_dir = Path(run_dir)
        self.source = source
        self.objective = objective
        self.stage = stage
        self.model_config = model_config or {}
        if self.tcfg.threads:
            torch.set_num_threads(int(self.tcfg.threads))
        if self.ctx.device.type == "cpu":
            retain_freed_memory()  # about half the CPU step time was page faults (see allocator.py)
        model = model.to(self.ctx.device)
        if self.ctx.distributed and self.tcfg.sync_bn:
            model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if self.ctx.device.type == "cuda"
                     else convert_cross_rank_batchnorm(model))
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.tcfg.lr, betas=self.tcfg.betas,
                                           weight_decay=self.tcfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, self.tcfg)
        self.amp_dtype = _amp_dtype(self.tcfg, self.ctx.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.train_model: nn.Module = DistributedDataParallel(model, device_ids=ids)
        else:
            self.train_model = model
        self.step = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        return {
            "step": self.step,
            "stage": self.stage,
            "model": ckpt_io.unwrap_state_dict(self.model),
            "model_config": self.model_config,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": ckpt_io.capture_rng_state(),
            "config": self.cfg,
            "world_size": self.ctx.world_size,
            **self.objective.checkpoint_metadata(),
        }

    def save_checkpoint(self) -> Path | None:
        path = None
        if self.ctx.is_main:
            path = ckpt_io.save_step_checkpoint(self.run_dir, self.state(), self.tcfg.keep_checkpoints)
        barrier(self.ctx)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> int:
        ckpt = ckpt_io.load_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        ckpt_io.restore_rng_state(ckpt["rng"])
        old_model = ckpt.get("model_config")
        if self.model_config and old_model and not _same_architecture(old_model, self.model_config):
            log.warning("resuming from %s whose model config differs from the current one", path)
        if ckpt.get("world_size", 1) != self.ctx.world_size:
            log.warning("resuming a %d-process run with %d processes: later steps see different data",
                        ckpt.get("world_size", 1), self.ctx.world_size)
        self.step = int(ckpt["step"])
        return self.step

    def init_weights(self, path: str | os.PathLike) -> None:
        """Start from another run's network (weights only; optimiser, schedule and step start fresh)."""
        ckpt = ckpt_io.load_checkpoint(path, map_location="cpu")
        if self.model_config and ckpt.get("model_config") and not _same_architecture(ckpt["model_config"],
                                                                                      self.model_config):
            raise ValueError(f"train.init_from {path}: its model config differs from this run's "
                             f"({ckpt['model_config']} vs {self.model_config})")
        self.model.load_state_dict(ckpt["model"])
        log.info("initialised the model from %s (%s step %d)", path, ckpt.get("stage") or "run", ckpt["step"])

    def resume(self, resume: bool | str | os.PathLike) -> int:
        """Load `resume` (a path) or, for True, the run's latest checkpoint (fresh start if none)."""
        if not resume:
            return 0
        path = ckpt_io.latest_checkpoint(self.run_dir) if resume is True else Path(resume)
        if path is None:
            log.warning("no checkpoint in %s: starting from step 0", self.run_dir)
            return 0
        step = self.load_checkpoint(path)
        log.info("resumed from %s at step %d", path, step)
        return step

    # ------------------------------------------------------------------ logging

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines past `step` (written after the checkpoint by a killed run)."""
        path = self.run_dir / METRICS_FILE
        if not self.ctx.is_main or not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_bytes(path, "".join(ln + "\n" for ln in keep).encode())

    # ------------------------------------------------------------------ loop

    def _loader(self, start: int) -> DataLoader:
        t = self.tcfg
        sampler = StepBatchSampler(start, t.steps, t.batch_size, self.ctx.rank, self.ctx.world_size)
        return DataLoader(
            SeededDataset(self.source, t.seed),
            batch_sampler=sampler,
            collate_fn=self.source.collate,
            num_workers=t.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=False,
        )

    def train_step(self, batch) -> dict[str, float]:
        self.train_model.train()
        batch = batch.to(self.ctx.device, non_blocking=True)
        with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            terms = self.objective(self.train_model, batch)
        loss = terms.total
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {self.step + 1} ({terms.scalars()})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = float("nan")
        if self.tcfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        out = terms.scalars()
        out["grad_norm"] = grad_norm
        out = mean_across_ranks(out, self.ctx)
        out["lr"] = lr
        return out

    def fit(self, resume: bool | str | os.PathLike = False) -> list[dict]:
        """Train until train.steps; returns this call's per-step metrics (rank-mean)."""
        start = self.resume(resume)
        if start == 0 and self.tcfg.init_from:
            self.init_weights(self.tcfg.init_from)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics(start)
        t = self.tcfg
        writer = None
        if self.ctx.is_main and t.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start + 1 if start else None)
        bar = None
        if self.ctx.is_main and t.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=start, desc=self.stage or "train", dynamic_ncols=True)
        metrics_f = open(self.run_dir / METRICS_FILE, "a") if self.ctx.is_main else None
        try:
            tic = time.perf_counter()
            for batch in self._loader(start):
                scalars = self.train_step(batch)
                now = time.perf_counter()
                scalars["step_time"] = now - tic
                tic = now
                record = {"step": self.step, **scalars}
                self.history.append(record)
                if metrics_f is not None:
                    metrics_f.write(json.dumps(record) + "\n")
                    metrics_f.flush()
                if self.step % t.log_every == 0 or self.step == t.steps:
                    if writer is not None:
                        for k, v in scalars.items():
                            if math.isfinite(v):
                                writer.add_scalar(f"train/{k}", v, self.step)
                    if bar is not None:
                        bar.set_postfix({k: f"{scalars[k]:.4f}" for k in ("loss", "alignment", "consistency")
                                         if k in scalars})
                if bar is not None:
                    bar.update(1)
                if self.step % t.ckpt_every == 0 or self.step == t.steps:
                    self.save_checkpoint()
        finally:
            if metrics_f is not None:
                metrics_f.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return self.history


def _same_architecture(a: dict, b: dict) -> bool:
    """Whether two model configs build the same network, compared fully resolved so that a
    checkpoint written before a key existed (it stores no `head_channels`) matches its default."""
    try:
        return resolve_model_config(a) == resolve_model_config(b)
    except ValueError:
        return a == b


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
