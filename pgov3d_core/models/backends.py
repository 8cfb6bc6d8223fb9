"""Sparse-convolution backends behind one small interface, so the U-Net is written once.

A backend makes the sparse input tensor from a SparseBatch, builds the three convolution kinds
the U-Net needs (submanifold k×k×k, stride-2 down, its inverse up), reads/replaces the feature
matrix of a sparse tensor (BatchNorm, ReLU and residual additions act on features only), joins
skip connections, and returns output features in the row order of the input voxels.

* `spconv` (default): spconv 2.3.x. Inverse convolutions reuse the down-convolution's index
  pairs (`indice_key`), so decoder outputs land exactly on the encoder's voxels; submanifold
  convolutions of one level share their kernel maps. On CPU only the Native algorithm exists.
* `minkowski`: MinkowskiEngine 0.5.4 (optional: `make minkowski` builds it; imported lazily, so
  spconv-only installs never need it). Its coordinate manager plays the role of spconv's indice
  keys: a stride-1 convolution keeps its input's coordinate map, a stride-2 one makes (or reuses)
  the map of stride 2^level, and the transposed convolution lands back on the existing map of the
  finer level, so decoder outputs sit on the encoder's voxels exactly as with spconv.

Weight layouts (the same network, different tensors; BatchNorm and Linear weights are identical):

* spconv: every convolution's parameter is `<module>.weight`, shape (cout, kx, ky, kz, cin);
  [i, j, k] is the offset (i, j, k) - kernel//2 along the coords' x, y, z columns (submanifold k×k×k),
  or (i, j, k) itself for the 2×2×2 stride-2 down and its inverse (fine voxel 2·o + offset).
* minkowski: `<module>.kernel`, shape (kernel³, cin, cout); row r is the offset with x varying
  fastest, r = ix + kernel·iy + kernel²·iz (same i, j, k as above). `spconv_state_to_minkowski`
  applies exactly this mapping (test/test_minkowski.py checks both networks then agree, and the
  train-step benchmark starts both backends from the same weights with it).

A state dict of one layout is refused by a model of the other (`check_state_dict_backend`); the
checkpoint's `model_config.backend` names the layout it holds.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from abc import ABC, abstractmethod

import torch
from torch import nn

from pgov3d_core.models import gather_conv
from pgov3d_core.models.batch import SparseBatch

BACKENDS = ("spconv", "minkowski")


class BackendUnavailableError(ImportError):
    """The configured sparse-convolution backend is not installed; the message names it."""


class SparseBackend(ABC):
    """What the U-Net needs from a sparse-convolution library (see the module docstring)."""

    name: str

    @abstractmethod
    def make_input(self, batch: SparseBatch, multiple: int):
        """The library's sparse tensor for `batch`; `multiple` = 2^levels (grid extent rounding)."""

    @abstractmethod
    def subm(self, cin: int, cout: int, kernel: int, level: int) -> nn.Module:
        """Submanifold (output sites = input sites) k×k×k convolution at pyramid `level`."""

    @abstractmethod
    def down(self, cin: int, cout: int, level: int) -> nn.Module:
        """2×2×2 stride-2 convolution from level-1 to `level`."""

    @abstractmethod
    def up(self, cin: int, cout: int, level: int) -> nn.Module:
        """Inverse of `down(level)`: back onto the sites of level-1."""

    @abstractmethod
    def features(self, x) -> torch.Tensor:
        """The (sites, channels) feature matrix of sparse tensor x."""

    @abstractmethod
    def replace(self, x, feats: torch.Tensor):
        """x with its features replaced (same sites)."""

    @abstractmethod
    def cat(self, x, skip):
        """Channel concatenation of two tensors on the same sites."""

    @abstractmethod
    def output(self, x, x_in) -> torch.Tensor:
        """Features of x (on x_in's sites) in the row order of the batch's coords."""


def spatial_shape(coords: torch.Tensor, multiple: int) -> list[int]:
    """Grid extent per axis of (M, 4) [b, x, y, z] coords, rounded up to `multiple` (2^levels):
    a stride-2, kernel-2 convolution over an odd extent would silently drop the last voxel row."""
    if coords.shape[0] == 0:
        return [multiple] * 3
    ext = coords[:, 1:].max(dim=0).values.to(torch.int64) + 1
    return [int(math.ceil(int(e) / multiple) * multiple) for e in ext]


# ------------------------------------------------------------------------------------ spconv


class SpconvBackend(SparseBackend):
    name = "spconv"

    def __init__(self, algo: str = "auto"):
        try:
            import spconv.pytorch as spconv
            from spconv.pytorch import ConvAlgo

            from pgov3d_core.models import spconv_compat  # noqa: F401  (CPU backward workaround)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"model.backend 'spconv' selected but spconv is not importable ({exc}); "
                "install spconv (CPU) or spconv-cuXXX==2.3.8 (CUDA)"
            ) from None
        self._sp = spconv
        self.gather = algo == "torch"
        self.gather_max_voxels = math.inf
        if algo == "auto":
            from spconv.cppconstants import CPU_ONLY_BUILD

            # On CPU spconv has only Native, whose per-offset calls cost more than the arithmetic at
            # training-crop sizes: there the `torch` kernels (gather_conv.py) run steps faster, and
            # Native takes the large passes (gather_conv.AUTO_MAX_VOXELS). On GPU spconv's
            # implicit-GEMM algorithms.
            self.gather = CPU_ONLY_BUILD or not torch.cuda.is_available()
            self.gather_max_voxels = gather_conv.AUTO_MAX_VOXELS
            self.algo = ConvAlgo.Native if self.gather else None
        else:
            names = {"native": ConvAlgo.Native, "mask_implicit_gemm": ConvAlgo.MaskImplicitGemm,
                     "mask_split_implicit_gemm": ConvAlgo.MaskSplitImplicitGemm, "torch": ConvAlgo.Native}
            if algo not in names:
                raise ValueError(f"model.algo must be 'auto' or one of {sorted(names)}, got {algo!r}")
            self.algo = names[algo]

    def make_input(self, batch: SparseBatch, multiple: int):
        x = self._sp.SparseConvTensor(
            batch.feats, batch.coords.to(torch.int32).contiguous(), spatial_shape(batch.coords, multiple),
            batch.batch_size,
        )
        if self.gather:  # which kernels every convolution of this pass runs
            x.indice_dict[gather_conv.USE_GATHER] = batch.num_voxels <= self.gather_max_voxels
        return x

    def subm(self, cin, cout, kernel, level):
        key = f"subm{level}k{kernel}"
        conv = self._sp.SubMConv3d(cin, cout, kernel, padding=kernel // 2, bias=False, indice_key=key,
                                   algo=self.algo)
        return gather_conv.GatherSubMConv3d(conv, "gather_" + key) if self.gather else conv

    def down(self, cin, cout, level):
        key = f"down{level}"
        conv = self._sp.SparseConv3d(cin, cout, 2, stride=2, bias=False, indice_key=key, algo=self.algo)
        return gather_conv.GatherDownConv3d(conv, "gather_" + key) if self.gather else conv

    def up(self, cin, cout, level):
        key = f"down{level}"
        conv = self._sp.SparseInverseConv3d(cin, cout, 2, indice_key=key, bias=False, algo=self.algo)
        return gather_conv.GatherInverseConv3d(conv, "gather_" + key) if self.gather else conv

    def features(self, x):
        return x.features

    def replace(self, x, feats):
        return x.replace_feature(feats)

    def cat(self, x, skip):
        return x.replace_feature(torch.cat([x.features, skip.features], dim=1))

    def output(self, x, x_in):
        # Submanifold and inverse convolutions keep the input's index order.
        return x.features


# ------------------------------------------------------------------------------- MinkowskiEngine


def import_minkowski():
    """MinkowskiEngine, imported with its sys.path side effect undone. Its __init__ appends its own
    package folder to sys.path (its modules import each other as top-level names), which exposes
    generic top-level names (`utils`, `modules`, `diagnostics`) that could shadow other packages.
    Once imported, its modules are in sys.modules under those top-level names, so the folder can
    leave sys.path again; the two non-`Minkowski*` names it registered leave sys.modules too (ME
    keeps its own references; its lazy imports only ask for `Minkowski*` modules)."""
    path_before = set(sys.path)
    try:
        with warnings.catch_warnings():
            # A CPU-only build (`make minkowski`'s default) is deliberate; ME warns on every import.
            warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY")
            import MinkowskiEngine as ME
    except ImportError as exc:
        _forget_paths(p for p in sys.path if p not in path_before and os.path.basename(p) == "MinkowskiEngine")
        raise BackendUnavailableError(
            f"model.backend 'minkowski' selected but MinkowskiEngine is not importable ({exc}); "
            "`make minkowski` builds it (or use model.backend=spconv)"
        ) from None
    package_dir = os.path.dirname(os.path.abspath(ME.__file__))
    _forget_paths([package_dir])
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if "." not in name and not name.startswith("Minkowski") and origin \
                and os.path.dirname(os.path.abspath(origin)) == package_dir:
            del sys.modules[name]
    return ME


def _forget_paths(paths) -> None:
    drop = {os.path.abspath(p) for p in paths}
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") not in drop]


def pack_minkowski_input(batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinates, features) as MinkowskiEngine's SparseTensor wants them: int32 batched
    coordinates [b, x, y, z] (already quantised: tensor stride 1) and float32 features, both
    contiguous and on the features' device."""
    coords = batch.coords.to(device=batch.feats.device, dtype=torch.int32).contiguous()
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (M, 4) [batch, x, y, z], got {tuple(coords.shape)}")
    feats = batch.feats.to(torch.float32).contiguous()
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(f"{feats.shape[0]} feature rows for {coords.shape[0]} coordinates")
    return coords, feats


def restore_input_order(out_feats: torch.Tensor, inverse_mapping: torch.Tensor | None) -> torch.Tensor:
    """MinkowskiEngine stores a SparseTensor's rows in its own (hash) order; `inverse_mapping`
    gives, for every input row, its row in that order. Output rows are in the same order as the
    input tensor's (the decoder ends on the input coordinate map), so this maps them back."""
    if inverse_mapping is None or inverse_mapping.numel() == 0:
        return out_feats
    return out_feats[inverse_mapping.to(out_feats.device).long()]


class MinkowskiBackend(SparseBackend):
    name = "minkowski"

    def __init__(self):
        self.ME = import_minkowski()

    def make_input(self, batch, multiple):
        coords, feats = pack_minkowski_input(batch)
        # Every CoordinateManager calls omp_set_num_threads(num_threads) in the OpenMP runtime it
        # shares with torch. ME's default (all cores, up to 20) ignores torch.set_num_threads
        # (train.threads): tiny U-Net step on 3.8k voxels, 1 torch thread, 2 busy cores: 882 ms → 55 ms.
        map_type = self.ME.CoordinateMapType.CUDA if coords.is_cuda else self.ME.CoordinateMapType.CPU
        manager = self.ME.CoordinateManager(D=3, coordinate_map_type=map_type, num_threads=torch.get_num_threads())
        return self.ME.SparseTensor(features=feats, coordinates=coords, coordinate_manager=manager)

    def subm(self, cin, cout, kernel, level):
        # Stride 1 keeps the input's coordinate map: ME's equivalent of a submanifold convolution.
        return self.ME.MinkowskiConvolution(cin, cout, kernel_size=kernel, stride=1, bias=False, dimension=3)

    def down(self, cin, cout, level):
        return self.ME.MinkowskiConvolution(cin, cout, kernel_size=2, stride=2, bias=False, dimension=3)

    def up(self, cin, cout, level):
        return self.ME.MinkowskiConvolutionTranspose(cin, cout, kernel_size=2, stride=2, bias=False, dimension=3)

    def features(self, x):
        return x.F

    def replace(self, x, feats):
        return self.ME.SparseTensor(feats, coordinate_map_key=x.coordinate_map_key,
                                    coordinate_manager=x.coordinate_manager)

    def cat(self, x, skip):
        return self.ME.cat(x, skip)

    def output(self, x, x_in):
        return restore_input_order(x.F, getattr(x_in, "inverse_mapping", None))


class BackendMismatchError(RuntimeError):
    """A state dict holds the other backend's convolution weights (the message names both)."""


def spconv_state_to_minkowski(state: dict) -> dict:
    """A spconv U-Net state dict in the minkowski layout: each convolution `weight` (cout, kx, ky,
    kz, cin) becomes `kernel` (k³, cin, cout) with x varying fastest; everything else is shared."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 5:
            cout, cin = value.shape[0], value.shape[-1]
            out[key.removesuffix("weight") + "kernel"] = value.permute(3, 2, 1, 4, 0).reshape(-1, cin, cout)
        else:
            out[key] = value
    return out


def state_dict_backend(state: dict) -> str | None:
    """Which backend's convolution layout `state` holds: 'minkowski' (`*.kernel` tensors),
    'spconv' (5-D `*.weight` tensors), or None when it has no convolution weights."""
    if any(k.endswith(".kernel") for k in state):
        return "minkowski"
    if any(k.endswith(".weight") and getattr(v, "ndim", 0) == 5 for k, v in state.items()):
        return "spconv"
    return None


def check_state_dict_backend(state: dict, backend: str, prefix: str = "") -> None:
    """Raise BackendMismatchError when `state` (keys under `prefix`) holds convolution weights of a
    backend other than `backend`: the layouts differ, so loading would fail on key names anyway,
    and a clear message beats a list of missing keys."""
    found = state_dict_backend({k: v for k, v in state.items() if k.startswith(prefix)})
    if found is not None and found != backend:
        raise BackendMismatchError(
            f"these weights were trained with model.backend={found!r}, but this model uses {backend!r}: "
            f"rebuild the model with model.backend={found} (the checkpoint's model_config says so) — the "
            "two backends store convolution weights in different layouts (pgov3d_core/models/backends.py)"
        )


def make_backend(name: str, algo: str = "auto") -> SparseBackend:
    if name == "spconv":
        return SpconvBackend(algo)
    if name == "minkowski":
        return MinkowskiBackend()
    raise ValueError(f"model.backend must be one of {BACKENDS}, got {name!r}")
