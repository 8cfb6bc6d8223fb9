"""Fused CPU query kernel: decode a row's stored feature, take its cosine with every text and keep
the best, in one pass per row block, so the feature matrix is read once and nothing (rows, Q)-sized
is written to memory.

Why hand-written: PyTorch has no fused "16-bit rows -> float32 dot -> argmax" op; built from its
ops the scan is a loop of convert / matmul / max calls per block with a fork-join each, and on CPUs
without native bf16/fp16 arithmetic its 16-bit matmul falls back to a slow generic loop (see
query_kernels). This is the `fused` candidate of `query_kernels.scan`; like every candidate it is
used only where the per-process micro-benchmark finds it fastest and its scores match float32.

Rows are split across `threads` Python threads; the kernel releases the GIL (`nogil`) instead of
using numba's own thread pool, whose default (workqueue) layer aborts on concurrent calls.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - installs without numba keep the torch kernels
    numba = None

# float16 bits -> float32: shift exponent and mantissa into place, then one multiply by 2^112
# rebiases the exponent and turns fp16 subnormals into the right float32 values (no branches, so
# the row loop vectorises). Stored features are finite, so fp16 inf/NaN need no special case.
_F16_REBIAS = np.float32(2.0 ** 112)
_BLOCK_ROWS = 256  # best-per-text is reduced per block of rows


def available() -> bool:
    return numba is not None


def _decode_row_py(values, r, kind, bits, row):
    """Stored row r -> float32 `row` (a float32 view of the uint32 buffer `bits`)."""
    d = bits.shape[0]
    if kind == 0:
        for k in range(d):
            bits[k] = np.uint32(values[r, k]) << 16
    elif kind == 1:
        for k in range(d):
            bits[k] = (np.uint32(values[r, k]) & np.uint32(0x7FFF)) << 13
        for k in range(d):
            sign = np.float32(1.0) - np.float32(2.0) * np.float32((values[r, k] >> 15) & 1)
            row[k] = row[k] * _F16_REBIAS * sign
    else:
        for k in range(d):
            bits[k] = values[r, k]


def _scan_rows_py(values, kind, text, has, start, stop, scores, labels, best):
    """Rows [start, stop) of `values` (N, D), the stored bits: uint16 (kind 0: bfloat16, 1:
    float16) or uint32 (kind 2: float32). Writes scores / labels of those rows; `best` (Q,) gets
    the best score per text over the rows with a feature. Four rows at a time share each text
    load (four dot products per text element read: the loop is load-bound otherwise)."""
    q_count, d = text.shape
    bits = np.empty((4, d), np.uint32)
    rows = bits.view(np.float32)
    sims = np.empty(4, np.float32)
    for r0 in range(start, stop, 4):
        m = min(4, stop - r0)
        for i in range(m):
            _decode_row(values, r0 + i, kind, bits[i], rows[i])
        for i in range(m, 4):
            rows[i, :] = 0.0
        best_score = np.full(4, -np.inf, np.float32)
        best_text = np.zeros(4, np.int64)
        for q in range(q_count):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for k in range(d):
                t = text[q, k]
                a0 += rows[0, k] * t
                a1 += rows[1, k] * t
                a2 += rows[2, k] * t
                a3 += rows[3, k] * t
            sims[0], sims[1], sims[2], sims[3] = a0, a1, a2, a3
            for i in range(m):
                if sims[i] > best_score[i]:
                    best_score[i] = sims[i]
                    best_text[i] = q
                if has[r0 + i] and sims[i] > best[q]:
                    best[q] = sims[i]
        for i in range(m):
            scores[r0 + i] = best_score[i]
            labels[r0 + i] = best_text[i]


if numba is not None:
    # reassoc + contract: the dot product may be vectorised and use FMA; no flush-to-zero flags.
    _fast = {"reassoc", "contract", "nsz"}
    _decode_row = numba.njit(inline="always", fastmath=_fast)(_decode_row_py)
    _scan_rows = numba.njit(cache=True, nogil=True, fastmath=_fast)(_scan_rows_py)
else:  # pragma: no cover
    _decode_row = _scan_rows = None

_pools: dict[int, ThreadPoolExecutor] = {}


def scan(values: torch.Tensor, has: torch.Tensor, text: torch.Tensor, threads: int):
    """(scores (N,) float32, labels (N,) int64, best (Q,) float32) for CPU `values` (N, D) in
    bfloat16, float16 or float32 and L2-normalised float32 `text` (Q, D)."""
    kind = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}[values.dtype]
    arr = values.contiguous()
    arr = arr.view(torch.int16).numpy().view(np.uint16) if kind < 2 else arr.view(torch.int32).numpy().view(np.uint32)
    text_np = np.ascontiguousarray(text.detach().to("cpu", torch.float32).numpy())
    has_np = has.numpy()
    n = arr.shape[0]
    scores = np.empty(n, np.float32)
    labels = np.empty(n, np.int64)
    threads = max(1, min(int(threads), (n + _BLOCK_ROWS - 1) // _BLOCK_ROWS))
    bests = np.full((threads, text_np.shape[0]), -np.inf, np.float32)
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    if threads == 1:
        _scan_rows(arr, kind, text_np, has_np, 0, n, scores, labels, bests[0])
    else:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pgov3d-query")
        jobs = [pool.submit(_scan_rows, arr, kind, text_np, has_np, int(bounds[i]), int(bounds[i + 1]),
                            scores, labels, bests[i]) for i in range(threads)]
        for job in jobs:
            job.result()
    return torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(bests.max(axis=0))
