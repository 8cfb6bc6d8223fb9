"""Sparse convolutions in plain PyTorch: gather → one matmul per kernel offset → scatter.

This is the spconv backend's `torch` algorithm (`model.algo: torch`; `auto` uses it on CPU for
network passes of up to AUTO_MAX_VOXELS voxels, spconv Native above).
Why hand-written: on CPU spconv 2.3 has only its Native algorithm, which for every kernel offset
makes its own gather, matmul and scatter calls, forward and again backward. With the few thousand
voxels of a training crop those calls, not the arithmetic, are most of a step (a 3×3×3 conv on
135 voxels cost as long as one on 1600). Here a convolution is one `index_select` of all its
(input, output) pairs grouped by offset, one `torch.mm` per offset into one buffer and one
`index_add_`; backward the same in reverse (`GatherConv`; large inputs go in chunks of offsets).
Kernel maps are built once per pyramid level and shared by that level's convolutions through the
sparse tensor's `indice_dict`, as spconv's `indice_key` shares its own.

The modules hold spconv's parameter (`weight`, shape (cout, kx, ky, kz, cin)), initialised by the
spconv module they stand for, so the same seed gives the same network with either algorithm and a
checkpoint of one loads into the other. test/test_model.py checks outputs and gradients of all
three convolution kinds against spconv Native.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

# Network passes over more voxels than this run spconv's own kernels under `model.algo: auto`: the
# gain is the per-call overhead, which large inputs amortise, while gathering every pair at once
# costs memory bandwidth (bench/bench_train_step.py, tiny U-Net, 10 cm, 2-core AMD EPYC: a training
# step 0.71x of Native's at 5k voxels, 0.92x at 20k, 1.01x at 60k; a forward pass over 600k voxels
# at 5 cm 1.2x). The key below carries the choice to every convolution of one pass.
AUTO_MAX_VOXELS = 50_000
USE_GATHER = "pgov3d_gather"

# A dense lookup grid (4 bytes a cell) answers neighbour queries in one gather; beyond this many
# cells (large scenes at fine voxels) the sorted-key search is used instead.
MAX_GRID_CELLS = 1 << 24


@dataclass
class KernelMap:
    """Input→output pairs of one convolution, grouped by kernel offset: the first counts[0]
    pairs use offset 0, the next counts[1] offset 1, ... (offset index = weight row, x slowest)."""

    in_idx: torch.Tensor  # (P,) int64 rows of the input features
    out_idx: torch.Tensor  # (P,) int64 rows of the output features
    counts: list[int]
    n_out: int


# Gathered rows are processed in chunks of whole kernel offsets of at most this many elements, so
# memory stays bounded on large scenes (a training crop is one chunk: no extra calls).
CHUNK_ELEMENTS = 1 << 23


def _chunks(counts: list[int], width: int) -> list[tuple[int, int, int, int]]:
    """(first offset, end offset, first pair, end pair) groups of whole offsets, each gathering at
    most CHUNK_ELEMENTS values of `width` channels (a single larger offset is a chunk of its own)."""
    out, k0, p0, p = [], 0, 0, 0
    for k, n in enumerate(counts):
        if p > p0 and (p + n - p0) * width > CHUNK_ELEMENTS:
            out.append((k0, k, p0, p))
            k0, p0 = k, p
        p += n
    out.append((k0, len(counts), p0, p))
    return out


class GatherConv(torch.autograd.Function):
    """out[o] = Σ over pairs (i, o, k) of x[i] @ w[k]; w is (K, cin, cout). The gathered input rows
    are kept for backward when they were one chunk; larger inputs are gathered again instead."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        w = w.to(x.dtype)
        out = x.new_zeros(kmap.n_out, w.shape[2])
        chunks = _chunks(kmap.counts, x.shape[1] + w.shape[2])
        for k0, k1, p0, p1 in chunks:
            rows_in = x.index_select(0, kmap.in_idx[p0:p1])
            rows_out = x.new_empty(p1 - p0, w.shape[2])
            start = 0
            for k in range(k0, k1):
                n = kmap.counts[k]
                if n:
                    torch.mm(rows_in[start:start + n], w[k], out=rows_out[start:start + n])
                start += n
            out.index_add_(0, kmap.out_idx[p0:p1], rows_out)
        ctx.save_for_backward(x, w, rows_in if len(chunks) == 1 else None)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w, kept_rows = ctx.saved_tensors
        kmap = ctx.kmap
        grad_out = grad_out.contiguous().to(x.dtype)
        # Only what autograd asks for: the network's first convolution reads the points' colours,
        # which need no gradient (its 27 input-gradient matmuls and scatter were ~2 % of a step).
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_w = torch.zeros_like(w) if need_w else None
        grad_x = torch.zeros_like(x) if need_x else None
        for k0, k1, p0, p1 in _chunks(kmap.counts, x.shape[1] + w.shape[2]):  # the forward's chunks
            rows_in = kept_rows if kept_rows is not None else x.index_select(0, kmap.in_idx[p0:p1])
            grad_rows_out = grad_out.index_select(0, kmap.out_idx[p0:p1])
            grad_rows_in = torch.empty_like(rows_in) if need_x else None
            start = 0
            for k in range(k0, k1):
                n = kmap.counts[k]
                if n:
                    if need_w:
                        torch.mm(rows_in[start:start + n].t(), grad_rows_out[start:start + n], out=grad_w[k])
                    if need_x:
                        torch.mm(grad_rows_out[start:start + n], w[k].t(), out=grad_rows_in[start:start + n])
                start += n
            if need_x:
                grad_x.index_add_(0, kmap.in_idx[p0:p1], grad_rows_in)
        return grad_x, grad_w, None


def gather_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Apply a spconv-layout weight (cout, k, k, k, cin) along `kmap`."""
    cout, cin = weight.shape[0], weight.shape[-1]
    w = weight.permute(1, 2, 3, 4, 0).reshape(-1, cin, cout)
    with torch.autocast(feats.device.type, enabled=False):  # mm(out=...) into the input's dtype
        return GatherConv.apply(feats, w, kmap)


def _linear_keys(coords: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Row keys of (N, 4) [batch, x, y, z] coords in a box padded by `pad` cells on every side of
    x, y, z; returns (keys, strides of b/x/y/z, number of cells)."""
    c = coords.long()
    c = c - c.min(0).values
    c[:, 1:] += pad
    ext = c.max(0).values + 1
    ext[1:] += pad
    strides = torch.tensor([int(ext[1] * ext[2] * ext[3]), int(ext[2] * ext[3]), int(ext[3]), 1],
                           device=coords.device)
    key = c[:, 0] * strides[0] + c[:, 1] * strides[1] + c[:, 2] * strides[2] + c[:, 3]
    return key, strides, int(ext.prod())


def submanifold_map(coords: torch.Tensor, kernel: int) -> KernelMap:
    """Pairs of a k×k×k submanifold conv (outputs = inputs) on (N, 4) [batch, x, y, z] coords."""
    n = coords.shape[0]
    r = kernel // 2
    key, strides, cells = _linear_keys(coords, r)
    offsets = torch.tensor(list(itertools.product(range(-r, r + 1), repeat=3)), device=coords.device)
    half = offsets.shape[0] // 2  # offset K-1-k is -offset k, and the centre is the identity
    delta = offsets[:half] @ strides[1:]
    query = delta[:, None] + key[None, :]  # (half, N): the input at out + offset
    if cells <= MAX_GRID_CELLS:
        grid = torch.full((cells,), -1, dtype=torch.int32, device=coords.device)
        grid[key] = torch.arange(n, dtype=torch.int32, device=coords.device)
        found = grid[query]
    else:
        sorted_key, order = torch.sort(key)
        pos = torch.searchsorted(sorted_key, query).clamp_(max=n - 1)
        found = torch.where(sorted_key[pos] == query, order[pos], -1)
    hit = found >= 0
    out_lo = hit.nonzero()[:, 1]  # row-major: sorted by offset, as found[hit] below
    in_lo = found[hit].long()
    counts_lo = hit.sum(1).tolist()
    # Mirrored offsets K-1-k in order K//2+1 .. K-1 are the pairs of offsets half-1 .. 0, swapped.
    flip_in, flip_out = [], []
    ends = list(itertools.accumulate(counts_lo, initial=0))
    for j in range(half - 1, -1, -1):
        flip_in.append(out_lo[ends[j]:ends[j + 1]])
        flip_out.append(in_lo[ends[j]:ends[j + 1]])
    centre = torch.arange(n, device=coords.device)
    return KernelMap(torch.cat([in_lo, centre, *flip_in]), torch.cat([out_lo, centre, *flip_out]),
                     counts_lo + [n] + counts_lo[::-1], n)


def downsample_map(coords: torch.Tensor) -> tuple[KernelMap, torch.Tensor]:
    """The 2×2×2 stride-2 conv's pairs (fine voxel → its parent, offset = fine - 2·parent) and the
    parent (coarse) coords, (M, 4) int32."""
    c = coords.long()
    parent = c.clone()
    parent[:, 1:] >>= 1  # floor(c / 2), also below 0 (arithmetic shift)
    key, _, _ = _linear_keys(parent, 0)
    uniq, parent_idx = torch.unique(key, return_inverse=True)
    coarse = parent.new_empty(uniq.shape[0], 4).index_copy_(0, parent_idx, parent)  # duplicates agree
    offset = c[:, 1:] & 1
    k = offset[:, 0] * 4 + offset[:, 1] * 2 + offset[:, 2]
    order = torch.argsort(k, stable=True)
    counts = torch.bincount(k, minlength=8).tolist()
    return KernelMap(order, parent_idx[order], counts, uniq.shape[0]), coarse.to(torch.int32)


class _GatherModule(nn.Module):
    """Holds the spconv module's weight (and its in/out channels, kernel size) and runs that module
    itself on passes marked for spconv's kernels (USE_GATHER False)."""

    def __init__(self, spconv_module: nn.Module, key: str):
        super().__init__()
        self.weight = spconv_module.weight
        self.key = key
        self.in_channels = spconv_module.in_channels
        self.out_channels = spconv_module.out_channels
        self.kernel_size = spconv_module.kernel_size
        self._spconv = (spconv_module,)  # the same weight; a tuple keeps it out of the state dict

    def _run_spconv(self, x):
        return self._spconv[0].train(self.training)(x)


class GatherSubMConv3d(_GatherModule):
    """spconv.SubMConv3d (bias-free) on GatherConv; maps cached under indice_dict[key]."""

    def forward(self, x):
        if not x.indice_dict.get(USE_GATHER, True):
            return self._run_spconv(x)
        kmap = x.indice_dict.get(self.key)
        if kmap is None:
            kmap = x.indice_dict[self.key] = submanifold_map(x.indices, self.weight.shape[1])
        return x.replace_feature(gather_conv(x.features, self.weight, kmap))


class GatherDownConv3d(_GatherModule):
    """spconv.SparseConv3d(kernel 2, stride 2, bias-free): output sites are the occupied parents."""

    def forward(self, x):
        from spconv.pytorch import SparseConvTensor

        if not x.indice_dict.get(USE_GATHER, True):
            return self._run_spconv(x)
        cached = x.indice_dict.get(self.key)
        if cached is None:
            kmap, coarse = downsample_map(x.indices)
            cached = x.indice_dict[self.key] = (kmap, coarse, x.indices, list(x.spatial_shape))
        kmap, coarse, _, _ = cached
        shape = [(s - 2) // 2 + 1 for s in x.spatial_shape]  # spconv's output shape (kernel 2, stride 2)
        return SparseConvTensor(gather_conv(x.features, self.weight, kmap), coarse, shape, x.batch_size,
                                indice_dict=x.indice_dict)


class GatherInverseConv3d(_GatherModule):
    """spconv.SparseInverseConv3d of the down conv cached under `key`: back onto its fine sites."""

    def forward(self, x):
        from spconv.pytorch import SparseConvTensor

        if not x.indice_dict.get(USE_GATHER, True):
            return self._run_spconv(x)
        down, _, fine, fine_shape = x.indice_dict[self.key]
        kmap = KernelMap(down.out_idx, down.in_idx, down.counts, fine.shape[0])
        return SparseConvTensor(gather_conv(x.features, self.weight, kmap), fine, fine_shape, x.batch_size,
                                indice_dict=x.indice_dict)
