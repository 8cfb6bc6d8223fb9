"""Per-voxel feature storage and the query kernel, chosen by measurement on the running CPU.

A map query reads the whole (N, D) feature matrix once and, per voxel, takes the best of Q text
cosines. At 1M voxels x 512-d that is 1 GB of 16-bit features and 10 G multiply-adds for 20
texts, so which storage type and which kernel is fastest depends on the CPU: with AMX or
AVX512-BF16 a bfloat16 matmul is nearly free; on AVX512 without BF16 and on AVX2-only CPUs
PyTorch's bf16/fp16 matmul falls back to a slow generic loop (measured on a 2-core AVX2 EPYC:
5 texts 2.2 s against ~0.1 s for one read of the matrix), and converting a cache-sized block to
float32 and calling sgemm wins instead. Rather than guess from CPU flags, `choose_kernel` times
each candidate once per process on a sample block and keeps the fastest; `choose_storage` does
the same for the "auto" storage type.

Known limits (measured on a 2-core AVX512 Xeon and a 2-core AVX512-BF16 EPYC, bench/bench_map.py):
(1) the torch kernels are a loop of PyTorch ops per block, so the fp16->fp32 conversion and the
product are separate passes and each block pays several OpenMP fork/joins; on an oversubscribed
CPU each join can wait a scheduler slice. The `fused` kernel (fused_query.py: convert + dot + max
per row, one parallel region per query) avoids both, and competes in the same measurement.
(2) At 20 texts x 512-d the multiply-adds alone exceed the bandwidth floor on 2 cores (10 G FMA
against a ~25 ms read of 1 GB), so multi-text queries stay several times the floor.

Storage modes (`STORAGE_MODES`), bytes per 512-d feature:
  float32   2048 B  reference precision
  float16   1024 B  11-bit mantissa, fp32 accumulation in every kernel but `mm16`
  bfloat16  1024 B  8-bit mantissa; native (fast) only with AVX512-BF16 / AMX
  int8       516 B  compact mode: symmetric int8 with a float32 scale per voxel (off by default)

Kernels (all return float32 scores; the chunk loop keeps each (rows, Q) block cache-sized):
  mm16     matmul in the 16-bit storage type itself (oneDNN bf16/AMX, AVX512-FP16), block @ text.T
  mm16_tn  the same product as text @ block.T (Q, rows): oneDNN blocks the skinny bf16 product
           better this way round at few texts (measured on a 2-core AVX512-BF16 EPYC, 1M x 512,
           5 texts: 55 ms against 89 ms, the bare read being 40 ms)
  f32_nt   block -> float32 buffer, buffer @ text.T  (rows, Q)
  f32_tn   block -> float32 buffer, text @ buffer.T  (Q, rows): MKL blocks skinny products
           differently in this orientation, faster at some Q (measured, not assumed)
  fused    one pass per row: decode, Q dot products, max (pgov3d_core/fused_query.py, numba);
           16-bit and float32 storage, CPU only
  i8mm     int8 only: int8 x int8 -> int32 (`torch._int_mm`, VNNI where present: ~4x the fp32
           rate), rescaled by the text and voxel scales. Each text is split into two int8 rows,
           t = s * (hi + lo / 127), so text rounding adds nothing measurable to the features'
           (top-1 agreement with float32 99.42 % -> 99.68 % on the benchmark's hard features)
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from dataclasses import dataclass

import torch

from pgov3d_core import fused_query

log = logging.getLogger(__name__)

STORAGE_MODES = ("float32", "float16", "bfloat16", "int8")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                  "int8": torch.int8}
KERNELS = ("mm16", "mm16_tn", "f32_nt", "f32_tn", "i8mm", "fused")
CHUNKS = (2048, 8192)  # rows per block; smaller blocks pay more per-call overhead than they save
_SAMPLE_ROWS = 8192  # micro-benchmark block: 8 MB of 16-bit 512-d features (a few ms per kernel)
_INT8_MAX = 127.0
# Largest |score - float32 product of the stored values| a kernel may show on the sample block:
# mm16 rounds its result to 16 bits (bf16: 2^-9 relative); i8mm's split texts leave ~1e-5. An
# int8 GEMM that saturates (AVX2 without VNNI: u8 x s8 pairs summed in int16) errs by ~2e-2 and
# is rejected, whatever its speed.
_TOLERANCE = {"mm16": 1e-2, "mm16_tn": 1e-2, "f32_nt": 1e-4, "f32_tn": 1e-4, "i8mm": 1e-3, "fused": 1e-4}


def storage_mode(value: str | torch.dtype) -> str:
    """Normalise a storage name or torch dtype to one of STORAGE_MODES ('auto' passes through)."""
    if isinstance(value, torch.dtype):
        for name, dt in STORAGE_DTYPES.items():
            if dt == value:
                return name
        raise ValueError(f"feature storage must be one of {STORAGE_MODES} or 'auto', got {value}")
    if value == "auto" or value in STORAGE_MODES:
        return value
    raise ValueError(f"feature storage must be one of {STORAGE_MODES} or 'auto', got {value!r}")


def kernels_for(mode: str) -> tuple[str, ...]:
    fused = ("fused",) if fused_query.available() else ()
    if mode == "int8":
        return ("f32_nt", "f32_tn", "i8mm")
    if mode == "float32":
        return ("f32_nt", "f32_tn", *fused)
    return ("mm16", "mm16_tn", "f32_nt", "f32_tn", *fused)


# ---------------------------------------------------------------- encoding


def encode(normed: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L2-normalised float32 features (R, D) -> stored values and, for int8, per-row scales."""
    if mode != "int8":
        return normed.to(STORAGE_DTYPES[mode]), None
    amax = normed.abs().amax(dim=1).clamp(min=1e-12)
    scale = amax / _INT8_MAX
    values = torch.round(normed / scale[:, None]).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return values, scale.to(torch.float32)


def decode(values: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Stored values (and int8 scales) -> float32 features."""
    out = values.to(torch.float32)
    return out if scale is None else out.mul_(scale[:, None])


# ---------------------------------------------------------------- the scan


@dataclass
class Scan:
    """Per row: best score (float32) and best text index (int64); per text: its best score over the
    rows that have a feature (-inf if none)."""

    scores: torch.Tensor
    labels: torch.Tensor
    best: torch.Tensor


def scan(values: torch.Tensor, scale: torch.Tensor | None, has: torch.Tensor, text: torch.Tensor,
         kernel: str, chunk: int) -> Scan:
    """Best text per row of `values` (N, D) for L2-normalised float32 `text` (Q, D).

    Rows without a feature (has == False) are stored as zeros, so their similarity is 0: they are
    excluded from `best` only in the chunks that contain any (known before the loop, so fully
    featured chunks pay no mask)."""
    if kernel not in kernels_for(_mode_of(values)):
        raise ValueError(f"kernel {kernel!r} does not apply to {values.dtype} storage "
                         f"(one of {kernels_for(_mode_of(values))})")
    if kernel == "fused":  # one pass, rows split over torch's thread count (fused_query)
        if values.device.type != "cpu":
            raise ValueError("the fused query kernel runs on CPU only")
        scores, labels, best = fused_query.scan(values, has, text, torch.get_num_threads())
        return Scan(scores, labels, best)
    n, d = values.shape
    q = text.shape[0]
    dev = values.device
    scores = torch.empty(n, dtype=torch.float32, device=dev)
    labels = torch.empty(n, dtype=torch.int64, device=dev)
    best = torch.full((q,), float("-inf"), dtype=torch.float32, device=dev)
    missing = torch.nonzero(~has).squeeze(1)
    masked_chunks = set(torch.unique(missing // chunk).tolist()) if missing.numel() else set()
    upcast = values.dtype != torch.float32 and kernel in ("f32_nt", "f32_tn")
    buf = torch.empty((min(chunk, n), d), dtype=torch.float32, device=dev) if upcast else None
    if kernel == "mm16":
        text_t = text.to(values.dtype).T.contiguous()
    elif kernel == "mm16_tn":
        text_16 = text.to(values.dtype)
    elif kernel == "i8mm":
        t_scale = text.abs().amax(dim=1).clamp(min=1e-12) / _INT8_MAX
        hi = torch.round(text / t_scale[:, None])
        lo = torch.round((text / t_scale[:, None] - hi) * _INT8_MAX)
        text_q = torch.cat([hi, lo]).clamp_(-_INT8_MAX, _INT8_MAX).to(torch.int8)  # (2Q, D), one product
    else:
        text_t = text.T.contiguous()
    for i, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        block = values[start:stop]
        if upcast:
            block = buf[: stop - start].copy_(block)
        if kernel in ("f32_tn", "mm16_tn", "i8mm"):  # (Q, rows)
            if kernel == "mm16_tn":
                sim = torch.mm(text_16, block.T).float()
            elif kernel == "i8mm":
                both = torch._int_mm(text_q, block.T).to(torch.float32)
                sim = both[q:].mul_(1.0 / _INT8_MAX).add_(both[:q]).mul_(t_scale[:, None])
            else:
                sim = torch.mm(text, block.T)
            if scale is not None:
                # Positive per-row scales leave the argmax unchanged; they matter for scores and best.
                sim.mul_(scale[start:stop][None, :])
            torch.max(sim, dim=0, out=(scores[start:stop], labels[start:stop]))
            cols = sim if i not in masked_chunks else sim[:, has[start:stop]]
            if cols.shape[1]:
                torch.maximum(best, cols.amax(dim=1), out=best)
        else:  # (rows, Q)
            sim = torch.mm(block, text_t)
            if scale is not None:
                sim.mul_(scale[start:stop][:, None])
            if sim.dtype == torch.float32:
                torch.max(sim, dim=1, out=(scores[start:stop], labels[start:stop]))
            else:
                s, lab = sim.max(dim=1)
                scores[start:stop], labels[start:stop] = s, lab
            rows = sim if i not in masked_chunks else sim[has[start:stop]]
            if rows.shape[0]:
                torch.maximum(best, rows.amax(dim=0).float(), out=best)
    return Scan(scores, labels, best)


def _mode_of(values: torch.Tensor) -> str:
    return storage_mode(values.dtype)


# ---------------------------------------------------------------- choice by measurement


def _sample(mode: str, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    normed = torch.nn.functional.normalize(torch.randn(_SAMPLE_ROWS, d, generator=gen), dim=1)
    values, scale = encode(normed.to(device), mode)
    return values, scale, torch.ones(_SAMPLE_ROWS, dtype=torch.bool, device=device)


def _time(fn, give_up_after: float, repeats: int = 5) -> float:
    """Best of `repeats` runs after a warm-up (first-call allocations and oneDNN primitive creation
    are not the steady state); a candidate already `give_up_after` seconds slow on its second run
    is not timed further (the generic 16-bit loops are 10-20x slower: no need to wait for them)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if best > give_up_after:
            break
    return best


@functools.cache
def kernel_timings(mode: str, d: int, q: int, device: str = "cpu") -> dict[tuple[str, int], float]:
    """Seconds per sample block for every (kernel, chunk) candidate of `mode` at (D, Q) that
    computes correctly here (scores within _TOLERANCE of float32); measured once per process
    (minimum of 5 runs, so a busy neighbour does not decide the choice)."""
    values, scale, has = _sample(mode, d, device)
    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(q, d, generator=gen), dim=1).to(device)
    reference = scan(values, scale, has, text, "f32_nt", CHUNKS[0]).scores
    out: dict[tuple[str, int], float] = {}
    for kernel in kernels_for(mode):
        try:
            error = float((scan(values, scale, has, text, kernel, CHUNKS[0]).scores - reference).abs().max())
        except RuntimeError as exc:  # a kernel this build/CPU lacks (e.g. no _int_mm): not a candidate
            log.debug("query kernel %s unavailable for %s: %s", kernel, mode, exc)
            continue
        if error > _TOLERANCE[kernel]:
            log.warning("query kernel %s rejected for %s storage on this CPU: scores off by %.3g (limit %g)",
                        kernel, mode, error, _TOLERANCE[kernel])
            continue
        for chunk in CHUNKS[:1] if kernel == "fused" else CHUNKS:  # fused has no block size to choose
            limit = 3 * min(out.values(), default=float("inf"))
            try:
                out[kernel, chunk] = _time(lambda k=kernel, c=chunk: scan(values, scale, has, text, k, c), limit)
            except RuntimeError as exc:  # a kernel this build/CPU lacks (e.g. no _int_mm): not a candidate
                log.debug("query kernel %s unavailable for %s: %s", kernel, mode, exc)
    if not out:
        raise RuntimeError(f"no query kernel runs for {mode} storage on this machine")
    return out


@functools.cache
def choose_kernel(mode: str, d: int, q: int, device: str = "cpu") -> tuple[str, int]:
    """The fastest (kernel, chunk) for `mode` storage at (D, Q) on this process's device."""
    if device != "cpu":
        # On CUDA the 16-bit matmul is the native path (tensor cores); there is nothing to choose.
        return ("mm16", 1 << 20) if mode in ("float16", "bfloat16") else ("f32_nt", 1 << 20)
    timings = kernel_timings(mode, d, q, device)
    choice = min(timings, key=timings.get)
    log.info("query kernel for %s, D=%d, Q=%d: %s/%d rows (%s)", mode, d, q, *choice,
             ", ".join(f"{k}/{c} {t * 1e3:.1f} ms" for (k, c), t in sorted(timings.items())))
    return choice


@functools.cache
def choose_storage(d: int, device: str = "cpu") -> str:
    """'auto' storage: float16 on CUDA; on CPU the faster 16-bit type for D-dim features, measured
    over a bandwidth-bound (1 text) and a compute-bound (20 texts) query. float16 wins ties (bf16
    must be 15 % faster) because it keeps 3 more mantissa bits at the same memory."""
    if device != "cpu":
        return "float16"
    cost = {}
    for mode in ("float16", "bfloat16"):
        cost[mode] = sum(min(kernel_timings(mode, d, q, device).values()) for q in (1, 20))
    choice = "bfloat16" if cost["bfloat16"] < 0.85 * cost["float16"] else "float16"
    log.info("feature storage for D=%d: %s (float16 %.1f ms, bfloat16 %.1f ms per sample)", d, choice,
             cost["float16"] * 1e3, cost["bfloat16"] * 1e3)
    return choice


# ---------------------------------------------------------------- reporting


def cpu_summary() -> str:
    """One line naming the CPU, PyTorch's kernel capability and the ISA extensions that decide the
    query kernel, so benchmark figures from different machines are never compared blindly."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            first_cpu = f.read().split("\n\n")[0].splitlines()
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first_cpu)}
        model = info.get("model name", model)
        flags = set(info.get("flags", "").split())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                       "amx_int8") if f in flags]
    limits = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
              if k in os.environ]
    return (f"CPU: {model}, {os.cpu_count()} cores, torch capability {torch.backends.cpu.get_cpu_capability()}, "
            f"flags {' '.join(ext) or 'none of avx2/avx512/amx'}, {torch.get_num_threads()} threads"
            + (f", limited by {' '.join(limits)}" if limits else ""))
