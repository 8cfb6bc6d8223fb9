"""Benchmark: one 3D-network training step (forward, Eq. 2 alignment loss, backward, AdamW) vs
voxel count, for the default preset (MinkUNet18A-size) unless --preset says otherwise.

Inputs are crops of a synthetic room surface voxelised at 2 cm (real scan sparsity, not random
voxels): the N voxels nearest to the room centre, one cloud per step, 512-d head (ViT-B/32).
Peak memory: CUDA `max_memory_allocated`; CPU the process's peak RSS (monotonic, so sizes run in
increasing order and each row shows the peak up to and including that size).

    python bench/bench_train_step.py [--quick] [--preset minkunet18a] [--device cpu|cuda|all] [--threads N]

CPU timings need an otherwise idle machine: with several threads every tiny per-kernel-offset op
waits for all threads, so one busy core elsewhere slows steps down many times (see
config/stage1.yaml, train.threads).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgov3d_core.data.synthetic import SyntheticRoom  # noqa: E402
from pgov3d_core.losses import alignment_loss  # noqa: E402
from pgov3d_core.models import DEFAULT_PRESET, build_model, collate_clouds, count_parameters  # noqa: E402
from pgov3d_core.models.batch import SparseBatch, voxelize_cloud  # noqa: E402

VOXEL = 0.02


def room_voxels(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(points, colours in [-1, 1], class labels) of the n voxels nearest the centre of synthetic
    rooms (rooms placed side by side until there are enough voxels)."""
    pts, rgb, lab = [], [], []
    total, k = 0, 0
    while total < n:
        cloud = SyntheticRoom.random(seed + k).sample_cloud(density=1.0 / VOXEL**2)
        xyz = torch.from_numpy(cloud.xyz) + torch.tensor([12.0 * k, 0.0, 0.0])
        vc = voxelize_cloud(xyz, torch.from_numpy(cloud.rgb).float() / 127.5 - 1, VOXEL)
        voxel_label = torch.full((vc.coords.shape[0],), -1, dtype=torch.int64)
        voxel_label[vc.inverse] = torch.from_numpy(cloud.labels.astype(np.int64))  # any of its points' labels
        pts.append((vc.coords.float() + 0.5) * VOXEL)
        rgb.append(vc.feats)
        lab.append(voxel_label)
        total += vc.coords.shape[0]
        k += 1
    pts, rgb, lab = torch.cat(pts), torch.cat(rgb), torch.cat(lab)
    center = pts.mean(dim=0)
    keep = torch.argsort((pts - center).norm(dim=1))[:n]
    return pts[keep], rgb[keep], lab[keep]


def make_batch(n: int) -> tuple[SparseBatch, torch.Tensor]:
    pts, rgb, lab = room_voxels(n)
    batch = collate_clouds([voxelize_cloud(pts, rgb, VOXEL)])
    return batch, lab.clamp(min=0)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench(device: torch.device, preset: str, sizes: list[int], repeats: int, classes: int = 20) -> list[tuple]:
    torch.manual_seed(0)
    model = build_model({"preset": preset, "out_channels": 512}).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.nn.functional.normalize(torch.randn(classes, 512, device=device), dim=1)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rows = []
    for n in sizes:
        batch, labels = make_batch(n)
        batch, labels = batch.to(device), (labels % classes).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def step(batch=batch, labels=labels):
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = alignment_loss(model(batch), labels, text)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        step()  # warm-up: kernel maps, allocator, autotuning
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        rows.append((device.type, n, batch.num_voxels, statistics.median(times), min(times), peak_mib(device)))
        print(f"  {device.type:4s} {n:>8,d} voxels: {statistics.median(times) * 1e3:9.1f} ms/step", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20k voxels only, 1 timed step (a smoke run)")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu, plus cuda when available)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="voxel counts (default 20000 50000 200000)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([20_000] if args.quick else [20_000, 50_000, 200_000])
    repeats = args.repeats or (1 if args.quick else 3)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.device != "all":
        devices = [torch.device(args.device)]
    params = count_parameters(build_model({"preset": args.preset, "out_channels": 512}))
    print(f"train step, preset {args.preset} ({params / 1e6:.1f} M parameters), 512-d head, {VOXEL * 100:.0f} cm "
          f"voxels, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = []
    for dev in devices:
        rows += bench(dev, args.preset, sorted(sizes), repeats)
    print()
    print("| device | voxels | median ms/step | min ms/step | voxels/s | peak memory MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for dev, _, m, med, best, mem in rows:
        print(f"| {dev} | {m:,d} | {med * 1e3:.1f} | {best * 1e3:.1f} | {m / med:,.0f} | {mem:,.0f} |")
    if any(d.type == "cpu" for d in devices):
        print("\nCPU peak memory is the process's peak RSS so far (includes the model, data and Python).")


if __name__ == "__main__":
    main()
