"""Keep freed CPU memory in the process instead of returning it to the kernel after every step.

A sparse U-Net step on the CPU allocates and frees many buffers of a few MB to a few hundred MB
(gathered features and GEMM outputs per kernel offset). glibc serves blocks above its mmap
threshold with a fresh mmap and unmaps them on free, and trims the heap top back to the kernel;
the next step then page-faults the same memory in again. Measured on a 2-core AMD EPYC, stage 1
of the CPU demo (tiny U-Net, 8 clouds of ~4k voxels, one thread): 0.76 s per step, half of it
system time (page faults); with the thresholds below 0.39 s per step and system time ~1 s in 40
steps. Memory that was freed stays mapped (up to `retain_bytes` at the heap top), so a process's
resident size follows its peak, not its current use.

Training only (the Trainer calls it): in the mapping node the same setting made /pgov3d/query
slower (bench_node N2, 100k voxels, 1 text: p95 27 -> 118 ms; 1M voxels p50 272 -> 817 ms), so the
node and PointFeaturePredictor keep glibc's defaults.

glibc only (Linux); elsewhere the call does nothing and says so. No reachable package sets these
(torch's CPU allocator is plain malloc), hence the two mallopt calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
DEFAULT_RETAIN_BYTES = 1 << 30

_applied: int | None = None


def retain_freed_memory(retain_bytes: int = DEFAULT_RETAIN_BYTES) -> bool:
    """Serve allocations below `retain_bytes` from the heap and keep up to `retain_bytes` of freed
    heap top mapped. Returns True when glibc took both settings (idempotent per process)."""
    global _applied
    if _applied == retain_bytes:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: the allocator keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    size = int(min(retain_bytes, 2**31 - 1))
    ok = bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, size))
    if ok:
        _applied = retain_bytes
    else:
        log.warning("mallopt refused the allocator settings (%d bytes); steps may spend time in page faults", size)
    return ok
