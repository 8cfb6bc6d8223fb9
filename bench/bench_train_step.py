"""Benchmark: one 3D-network training step (forward, Eq. 2 alignment loss, backward, AdamW) vs
voxel count, for the default preset (MinkUNet18A-size) unless --preset says otherwise, on each
sparse-convolution backend side by side: spconv with its Native kernels (`spconv/native`), spconv
with the plain-PyTorch gather-matmul-scatter kernels (`spconv/torch`, what `model.algo: auto` runs
on CPU; pgov3d_core/models/gather_conv.py), and MinkowskiEngine when it is installed (`make
minkowski`). The same initial weights (mapped to ME's layout), inputs and optimiser run on each, and
the table gives each step time as a ratio to spconv Native's at the same device and voxel count.

Inputs are crops of a synthetic room surface voxelised at 2 cm (real scan sparsity, not random
voxels): the N voxels nearest to the room centre, one cloud per step, 512-d head (ViT-B/32).
Peak memory: CUDA `max_memory_allocated`; CPU the process's peak RSS during that row (the peak is
reset through /proc/self/clear_refs before each row; where that is unavailable it is the process's
peak so far, which only grows).

    python bench/bench_train_step.py [--quick] [--preset minkunet18a] [--device cpu|cuda|all] [--threads N]
                                     [--backends spconv/native spconv/torch minkowski] [--voxel 0.02]
                                     [--breakdown]

`--preset tiny --voxel 0.1 --sizes 5000` is the demo's stage-1 setting (two pairs of 160×120 frames).
`--breakdown` adds where a CPU step of the torch kernels spends its time (kernel maps, convolution
forward and backward, loss, the rest) at the smallest size: machines that differ by more than their
clock can then be compared phase by phase.

CPU timings need an otherwise idle machine: with several threads every tiny per-kernel-offset op
waits for all threads, so one busy core elsewhere slows steps down many times (see
config/stage1.yaml, train.threads).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.synthetic import SyntheticRoom
from pgov3d_core.losses import alignment_loss
from pgov3d_core.models import DEFAULT_PRESET, build_model, collate_clouds, count_parameters, gather_conv
from pgov3d_core.models.backends import (
    BackendUnavailableError,
    import_minkowski,
    spconv_state_to_minkowski,
)
from pgov3d_core.models.batch import SparseBatch, voxelize_cloud
from pgov3d_core.query_kernels import cpu_summary

VOXEL = 0.02  # --voxel
BENCH_BACKENDS = ("spconv/native", "spconv/torch", "minkowski")
REFERENCE = "spconv/native"


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


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # "5" resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench(device: torch.device, backend: str, preset: str, sizes: list[int], repeats: int,
          classes: int = 20) -> list[tuple]:
    torch.manual_seed(0)
    state = build_model({"preset": preset, "out_channels": 512, "algo": "native"}).state_dict()
    name, _, algo = backend.partition("/")
    if device.type == "cuda" and algo == "native":
        algo = "auto"  # spconv's implicit GEMM on GPU; the row compares the torch kernels to it
    model = build_model({"preset": preset, "out_channels": 512, "backend": name, "algo": algo or "auto"})
    model.load_state_dict(spconv_state_to_minkowski(state) if name == "minkowski" else state)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.nn.functional.normalize(torch.randn(classes, 512, device=device), dim=1)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    rows = []
    for n in sizes:
        batch, labels = make_batch(n)
        batch, labels = batch.to(device), (labels % classes).to(device)
        reset_peak(device)

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
        rows.append((device.type, backend, n, batch.num_voxels, statistics.median(times), min(times),
                     peak_mib(device)))
        print(f"  {device.type:4s} {backend:13s} {n:>8,d} voxels: {statistics.median(times) * 1e3:9.1f} ms/step",
              flush=True)
    return rows


@contextlib.contextmanager
def phase_timers():
    """Wall time of the plain-PyTorch kernels' phases (gather_conv): kernel maps, conv forward, conv
    backward; yields the dict the wrapped calls add their seconds to, and unwraps them on exit."""
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    maps = gather_conv.submanifold_map, gather_conv.downsample_map
    conv_fwd, conv_bwd = gather_conv.GatherConv.forward, gather_conv.GatherConv.backward
    gather_conv.submanifold_map = timed("kernel maps", maps[0])
    gather_conv.downsample_map = timed("kernel maps", maps[1])
    gather_conv.GatherConv.forward = staticmethod(timed("conv forward", conv_fwd))
    gather_conv.GatherConv.backward = staticmethod(timed("conv backward", conv_bwd))
    try:
        yield spent
    finally:
        gather_conv.submanifold_map, gather_conv.downsample_map = maps
        gather_conv.GatherConv.forward, gather_conv.GatherConv.backward = staticmethod(conv_fwd), staticmethod(conv_bwd)


def breakdown(preset: str, n: int, repeats: int, classes: int = 20) -> None:
    """Where a CPU training step of the torch kernels spends its time (one row per phase), so that
    machines can be compared phase by phase (the same preset, voxels and thread count)."""
    torch.manual_seed(0)
    model = build_model({"preset": preset, "out_channels": 512, "algo": "torch"}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = torch.nn.functional.normalize(torch.randn(classes, 512), dim=1)
    batch, labels = make_batch(n)
    labels = labels % classes
    parts = {"forward": 0.0, "loss": 0.0, "backward": 0.0, "optimiser": 0.0}

    def step():
        t0 = time.perf_counter()
        feats = model(batch)
        t1 = time.perf_counter()
        loss = alignment_loss(feats, labels, text)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        parts["forward"] += t1 - t0
        parts["loss"] += t2 - t1
        parts["backward"] += t3 - t2
        parts["optimiser"] += t4 - t3

    step()
    parts.update(dict.fromkeys(parts, 0.0))
    with phase_timers() as spent:
        t = time.perf_counter()
        for _ in range(repeats):
            step()
        total = (time.perf_counter() - t) / repeats
    ms = {k: v / repeats * 1e3 for k, v in {**spent, **parts}.items()}
    rows = [("kernel maps", ms.get("kernel maps", 0.0)),
            ("conv forward", ms["conv forward"]),
            ("rest of the network forward (norms, activations, head)",
             ms["forward"] - ms["conv forward"] - ms.get("kernel maps", 0.0)),
            ("loss forward (512-d point features)", ms["loss"]),
            ("conv backward", ms["conv backward"]),
            ("rest of backward (norms, activations, head, loss)", ms["backward"] - ms["conv backward"]),
            ("optimiser (AdamW)", ms["optimiser"])]
    print(f"\nstep phases, cpu spconv/torch, {batch.num_voxels:,d} voxels, {torch.get_num_threads()} threads, "
          f"mean of {repeats} steps: {total * 1e3:.1f} ms")
    print("| phase | ms/step | share |")
    print("| --- | ---: | ---: |")
    for name, v in rows:
        print(f"| {name} | {v:.1f} | {100 * v / (total * 1e3):.0f} % |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20k voxels only, 1 timed step (a smoke run)")
    p.add_argument("--preset", default=DEFAULT_PRESET)
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu, plus cuda when available)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="voxel counts (default 20000 50000 200000)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--backends", nargs="+", default=list(BENCH_BACKENDS), choices=BENCH_BACKENDS,
                   help="sparse-convolution backends (minkowski is skipped, with the reason, when not installed)")
    p.add_argument("--voxel", type=float, default=0.02, help="voxel size of the crops (m)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the phases of a CPU step of the torch kernels (smallest size), to compare machines")
    args = p.parse_args()
    global VOXEL
    VOXEL = args.voxel
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([20_000] if args.quick else [20_000, 50_000, 200_000])
    repeats = args.repeats or (1 if args.quick else 3)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.device != "all":
        devices = [torch.device(args.device)]
    print(cpu_summary())
    backends = list(dict.fromkeys(args.backends))
    if "minkowski" in backends:
        try:
            ME = import_minkowski()
            print(f"MinkowskiEngine {ME.__version__} ({'CUDA' if ME.is_cuda_available() else 'CPU-only'} build)")
        except BackendUnavailableError as exc:
            print(f"minkowski skipped: {exc}")
            backends.remove("minkowski")
    params = count_parameters(build_model({"preset": args.preset, "out_channels": 512}))
    print(f"train step, preset {args.preset} ({params / 1e6:.1f} M parameters), 512-d head, {VOXEL * 100:.0f} cm "
          f"voxels, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, backends {', '.join(backends)}")
    rows = []
    for dev in devices:
        if dev.type == "cuda" and "minkowski" in backends and not ME.is_cuda_available():
            print("minkowski skipped on cuda: this MinkowskiEngine is a CPU-only build (make minkowski ME_CUDA=1)")
        for backend in backends:
            if not (dev.type == "cuda" and backend == "minkowski" and not ME.is_cuda_available()):
                rows += bench(dev, backend, args.preset, sorted(sizes), repeats)
    ref_time = {(r[0], r[2]): r[4] for r in rows if r[1] == REFERENCE}
    print()
    print("| device | backend | voxels | median ms/step | min ms/step | voxels/s | vs spconv/native "
          "| peak memory MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for dev, backend, n, m, med, best, mem in sorted(rows, key=lambda r: (r[0], r[2], BENCH_BACKENDS.index(r[1]))):
        ratio = f"{med / ref_time[(dev, n)]:.2f}x" if (dev, n) in ref_time else "-"
        print(f"| {dev} | {backend} | {m:,d} | {med * 1e3:.1f} | {best * 1e3:.1f} | {m / med:,.0f} | {ratio} | "
              f"{mem:,.0f} |")
    if any(d.type == "cpu" for d in devices):
        print("\nCPU peak memory is the process's peak RSS during the row (includes the model, data and Python).")
        print("vs spconv/native: median step time over spconv Native's at the same device and voxel count "
              "(below 1 = faster; on cuda the reference row runs spconv's implicit GEMM).")
    if args.breakdown:
        breakdown(args.preset, min(sizes), max(repeats, 5))


if __name__ == "__main__":
    main()
