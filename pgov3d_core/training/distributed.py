"""Process-group setup for DistributedDataParallel, driven by the torchrun environment.

`torchrun --nproc_per_node=G [--nnodes=N --node_rank=… --rdzv_endpoint=…] -m pgov3d_core.tools.train_stage1 …`
sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run is a single
process. Backend `auto` = NCCL with CUDA, gloo otherwise (CPU tests use 2 gloo processes).

Without torchrun, a config's `dist.processes: N` (N > 1) makes the stage spawn N local processes
itself (`run_in_processes`, gloo on localhost): on a CPU that is how the cores are used. The U-Net's
step is ~1000 small sparse-convolution kernels, which one process with two threads parallelises
badly (README "Threads"); two single-threaded processes with one sample each run the same global
batch (the step-seeded sampler gives rank r the samples a single process would take at positions
r, r + 1, …) in about half the time.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pgov3d_core.device import resolve_device


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "auto", device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, dev, None)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev, backend)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_across_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar metrics over ranks (for logging; one small all-reduce)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    t /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


class WorkerError(RuntimeError):
    """A spawned training process failed; the message is its exception's last line."""


def local_process_count(cfg: dict) -> int:
    """How many local processes a stage should spawn: `dist.processes` (default 1), or 1 when this
    process is already one of a torchrun group (WORLD_SIZE set)."""
    value = ((cfg.get("dist") or {}).get("processes", 1)) if isinstance(cfg, dict) else 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"dist.processes must be a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise ValueError(f"dist.processes must be a whole number >= 1, got {value!r}")
    return 1 if "WORLD_SIZE" in os.environ else n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_main(rank: int, world: int, port: int, target: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    try:
        target(*args)
    finally:
        shutdown_distributed()


def run_in_processes(world: int, target: Callable, *args) -> None:
    """`target(*args)` in `world` spawned local processes joined as one process group (each calls
    `init_distributed` as under torchrun). Returns when all have finished; a failure in any of them
    raises WorkerError with its message (the others are stopped)."""
    import torch.multiprocessing as mp

    try:
        mp.spawn(_process_main, args=(world, _free_port(), target, args), nprocs=world, join=True)
    except mp.ProcessRaisedException as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise WorkerError(lines[-1] if lines else str(exc)) from None
    except mp.ProcessExitedException as exc:
        raise WorkerError(f"a training process exited unexpectedly ({exc})") from None


class CrossRankBatchNorm1d(torch.nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are taken over the rows of every rank of the process
    group: torch's SyncBatchNorm runs on CUDA only, and with one sample per CPU process each rank's
    own statistics come from a single frame pair (measured: a 1-pair batch trains much worse than 2
    pairs, README "Training on CPU cores"). One all-reduce of (Σx, Σx², n) per layer and pass; its
    backward all-reduces the gradients (torch.distributed.nn), as SyncBatchNorm does. Same
    parameters and buffers as BatchNorm1d, so checkpoints do not change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        stats = torch.cat([xf.sum(0), (xf * xf).sum(0), xf.new_full((1,), float(x.shape[0]))])
        stats = all_reduce(stats)
        c = x.shape[1]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count)
                self.num_batches_tracked += 1
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)


def convert_cross_rank_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with every BatchNorm1d replaced by a CrossRankBatchNorm1d holding the same
    parameters and buffers (the CPU counterpart of nn.SyncBatchNorm.convert_sync_batchnorm)."""
    if type(module) is torch.nn.BatchNorm1d:
        out = CrossRankBatchNorm1d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_cross_rank_batchnorm(child))
    return module
