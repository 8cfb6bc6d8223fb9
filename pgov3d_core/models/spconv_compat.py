"""The one place where pgov3d works around spconv 2.3.x bugs on CPU (keep it that way).

1. CUDA stream lookup on CPU. spconv asks CUDA for the current stream unconditionally in several
   CPU code paths — most importantly `ops.indice_conv_backward`, the backward of every
   SubMConv3d/SparseConv3d with the Native algorithm. `spconv.pytorch.cppcore.get_current_stream()`
   calls `torch.cuda.current_stream()`, which without a GPU raises "Found no NVIDIA driver", so CPU
   training dies at the first `loss.backward()`. CPU kernels never use the stream, so returning 0
   ("no stream") when CUDA is unavailable is exact. `ops`, `hash` and `utils` bind the function
   with `from spconv.pytorch.cppcore import get_current_stream`, so every loaded `spconv.*` module
   that still holds the original is rebound, not only `cppcore`.

2. Data race in `SpconvOps.scatter_add_cpu`. Its OpenMP kernel (spconv/csrc/sparse/gather.py)
   declares the row pointers `buf`/`out_ptr` outside the parallel lambda and captures them by
   reference, so with more than one OpenMP thread, threads overwrite each other's pointers and
   rows are added to the wrong outputs. Every Native convolution (forward and input gradient)
   scatters through it, so multi-threaded CPU results are wrong and vary run to run (a 5×5×5
   submanifold conv is off by ~0.05 on unit inputs with 2 threads). It is replaced by
   `index_add_` on the same memory (indices are unique within one call, one kernel offset).

`test/test_model.py` checks both directions for both bugs: unpatched spconv must still show the
bug (else this module is dead code and should go) and patched spconv must be right on CPU.
"""

from __future__ import annotations

import sys

import torch

_PATCHED_ATTR = "_pgov3d_guarded"


def guarded_current_stream() -> int:
    """The raw CUDA stream handle spconv passes to its kernels; 0 when CUDA is unavailable (the
    CPU kernels ignore it)."""
    if not torch.cuda.is_available():
        return 0
    return torch.cuda.current_stream().cuda_stream


setattr(guarded_current_stream, _PATCHED_ATTR, True)


def race_free_scatter_add_cpu(out, in_, inds) -> None:
    """out[inds[i]] += in_[i] for i < len(inds) (tv.Tensors; `in_` may have more rows than
    `inds`, spconv passes its whole scratch buffer)."""
    nhot = inds.dim(0)
    if nhot == 0:
        return
    target = torch.from_numpy(out.numpy_view())
    source = torch.from_numpy(in_.numpy_view())[:nhot]
    index = torch.from_numpy(inds.numpy_view()).to(torch.int64)
    target.index_add_(0, index, source)


class _RaceFreeSpconvOps:
    """`SpconvOps` with `scatter_add_cpu` replaced; every other attribute is the original's."""

    def __init__(self, original):
        self._pgov3d_original = original

    def __getattr__(self, name):
        return getattr(self._pgov3d_original, name)

    scatter_add_cpu = staticmethod(race_free_scatter_add_cpu)


def install() -> list[str]:
    """Apply both workarounds to the loaded spconv modules. Idempotent; returns what this call
    patched (module names, and 'ops.SpconvOps')."""
    import spconv.pytorch  # noqa: F401  (loads ops, hash, utils, conv)
    import spconv.pytorch.cppcore as cppcore
    import spconv.pytorch.ops as ops

    original = getattr(cppcore, "_pgov3d_original_get_current_stream", cppcore.get_current_stream)
    cppcore._pgov3d_original_get_current_stream = original
    patched = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("spconv.") or module is None:
            continue
        if getattr(module, "get_current_stream", None) is original:
            module.get_current_stream = guarded_current_stream
            patched.append(name)
    if not isinstance(ops.SpconvOps, _RaceFreeSpconvOps):
        ops.SpconvOps = _RaceFreeSpconvOps(ops.SpconvOps)
        patched.append("spconv.pytorch.ops.SpconvOps")
    return patched


def uninstall() -> None:
    """Restore the original spconv functions (tests use this to check the bugs still exist)."""
    import spconv.pytorch.cppcore as cppcore
    import spconv.pytorch.ops as ops

    original = getattr(cppcore, "_pgov3d_original_get_current_stream", None)
    if original is not None:
        for name, module in list(sys.modules.items()):
            if name.startswith("spconv.") and getattr(module, "get_current_stream", None) is guarded_current_stream:
                module.get_current_stream = original
    if isinstance(ops.SpconvOps, _RaceFreeSpconvOps):
        ops.SpconvOps = ops.SpconvOps._pgov3d_original


def is_installed() -> bool:
    import spconv.pytorch.cppcore as cppcore
    import spconv.pytorch.ops as ops

    return all(getattr(m.get_current_stream, _PATCHED_ATTR, False) for m in (cppcore, ops)) and isinstance(
        ops.SpconvOps, _RaceFreeSpconvOps
    )


install()
