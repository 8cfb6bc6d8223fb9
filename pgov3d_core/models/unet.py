"""Sparse-convolution U-Net of the MinkUNet family with a linear head into the text-embedding space.

Layout (L = len(enc_channels) downsamplings):

    stem: k×k×k conv (stem_kernel) → BN → ReLU, then stem_depth residual blocks      level 0
    encoder stage i (1..L): 2×2×2 stride-2 conv → BN → ReLU, enc_depths[i-1] blocks   level i
    decoder stage j (0..L-1): inverse conv back to level L-1-j → dec_channels[j] → BN → ReLU,
        concatenate the encoder's skip of that level, dec_depths[j] blocks
    head: Linear(dec_channels[-1], out_channels), then L2 normalisation per point; with
        head_channels > 0 a pointwise Linear(dec_channels[-1], head_channels) → BN → ReLU first

Why the hidden head layer: a linear head maps the last decoder width into a subspace of that
dimension (plus its bias) of the text space, and the alignment loss spends it on the frequent
classes. With the tiny preset's 16 channels, a stage-1 checkpoint's head span held the mean
embedding of wall/floor/window at cosine 1.00 but cabinet 0.77, toilet 0.68, picture 0.58 and
refrigerator 0.56: those classes could not be told apart from their neighbours however long it
trained. The hidden layer costs a per-voxel matrix product, not a sparse convolution.

Blocks are MinkowskiEngine/ResNet BasicBlocks (two 3×3×3 submanifold convs, BN, identity or 1×1
projection shortcut). With stem_kernel=5, stem_depth=0, enc (32, 64, 128, 256), dec (256, 128,
96, 96) and depths 2 this is MinkUNet18A (OpenScene's 3D distillation network); with
stem_kernel=3, stem_depth=2 and channels m·(1..7) it is the PointGroup/RegionPLC SparseUNet
(m = 16 or 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pgov3d_core.losses import LinearFeatures
from pgov3d_core.models.backends import SparseBackend, check_state_dict_backend
from pgov3d_core.models.batch import SparseBatch


class BasicBlock(nn.Module):
    """Two submanifold 3×3×3 convs with BN; residual shortcut (1×1 projection when widths differ,
    applied to features directly: a 1×1×1 sparse conv is a Linear on the feature matrix)."""

    def __init__(self, backend: SparseBackend, cin: int, cout: int, level: int, bn_momentum: float):
        super().__init__()
        self._backend = (backend,)  # tuple: keep it out of nn.Module's attribute registry
        self.conv1 = backend.subm(cin, cout, 3, level)
        self.bn1 = nn.BatchNorm1d(cout, momentum=bn_momentum)
        self.conv2 = backend.subm(cout, cout, 3, level)
        self.bn2 = nn.BatchNorm1d(cout, momentum=bn_momentum)
        self.proj = (
            None
            if cin == cout
            else nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout, momentum=bn_momentum))
        )

    def forward(self, x):
        b = self._backend[0]
        identity = b.features(x)
        y = self.conv1(x)
        y = b.replace(y, F.relu(self.bn1(b.features(y))))
        y = self.conv2(y)
        out = self.bn2(b.features(y))
        out = out + (identity if self.proj is None else self.proj(identity))
        return b.replace(y, F.relu(out))


class ConvBNReLU(nn.Module):
    def __init__(self, conv: nn.Module, backend: SparseBackend, cout: int, bn_momentum: float):
        super().__init__()
        self._backend = (backend,)
        self.conv = conv
        self.bn = nn.BatchNorm1d(cout, momentum=bn_momentum)

    def forward(self, x):
        b = self._backend[0]
        y = self.conv(x)
        return b.replace(y, F.relu(self.bn(b.features(y))))


def _refuse_other_backend(module, state_dict, prefix, *_):
    check_state_dict_backend(state_dict, module.backend.name, prefix)


class SparseUNet(nn.Module):
    """Per-point, L2-normalised features in the text-embedding space from a SparseBatch."""

    def __init__(
        self,
        backend: SparseBackend,
        in_channels: int,
        out_channels: int,
        stem_channels: int,
        enc_channels: Sequence[int],
        enc_depths: Sequence[int],
        dec_channels: Sequence[int],
        dec_depths: Sequence[int],
        stem_kernel: int = 3,
        stem_depth: int = 0,
        bn_momentum: float = 0.1,
        head_channels: int = 0,
    ):
        super().__init__()
        n = len(enc_channels)
        if not (len(enc_depths) == n == len(dec_channels) == len(dec_depths)) or n == 0:
            raise ValueError(
                "enc_channels, enc_depths, dec_channels and dec_depths must have the same non-zero length, got "
                f"{len(enc_channels)}, {len(enc_depths)}, {len(dec_channels)}, {len(dec_depths)}"
            )
        if min(dec_depths) < 1:
            raise ValueError(f"every decoder stage needs at least one block (it merges the skip), got {dec_depths}")
        if stem_kernel % 2 != 1:
            raise ValueError(f"stem_kernel must be odd, got {stem_kernel}")
        self._backend = (backend,)
        self.levels = n
        self.stem = ConvBNReLU(backend.subm(in_channels, stem_channels, stem_kernel, 0), backend, stem_channels,
                               bn_momentum)
        self.stem_blocks = nn.ModuleList(
            BasicBlock(backend, stem_channels, stem_channels, 0, bn_momentum) for _ in range(stem_depth)
        )
        skip_channels = [stem_channels]
        self.down = nn.ModuleList()
        self.enc_blocks = nn.ModuleList()
        cin = stem_channels
        for i, (c, d) in enumerate(zip(enc_channels, enc_depths, strict=True)):
            level = i + 1
            self.down.append(ConvBNReLU(backend.down(cin, c, level), backend, c, bn_momentum))
            self.enc_blocks.append(nn.ModuleList(BasicBlock(backend, c, c, level, bn_momentum) for _ in range(d)))
            skip_channels.append(c)
            cin = c
        self.up = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for j, (c, d) in enumerate(zip(dec_channels, dec_depths, strict=True)):
            level = n - 1 - j  # target level of this decoder stage
            self.up.append(ConvBNReLU(backend.up(cin, c, level + 1), backend, c, bn_momentum))
            merged = c + skip_channels[level]
            blocks = [BasicBlock(backend, merged if k == 0 else c, c, level, bn_momentum) for k in range(d)]
            self.dec_blocks.append(nn.ModuleList(blocks))
            cin = c
        if head_channels < 0:
            raise ValueError(f"head_channels must be >= 0 (0: a linear head), got {head_channels}")
        self.head_hidden = None
        if head_channels:
            self.head_hidden = nn.Sequential(nn.Linear(cin, head_channels),
                                             nn.BatchNorm1d(head_channels, momentum=bn_momentum), nn.ReLU())
        self.head = nn.Linear(head_channels or cin, out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        # Weights of the other backend's layout are refused with a message naming both backends.
        self.register_load_state_dict_pre_hook(_refuse_other_backend)

    @property
    def backend(self) -> SparseBackend:
        return self._backend[0]

    def forward_voxels(self, batch: SparseBatch) -> torch.Tensor:
        """(M, out_channels) unnormalised voxel features in the row order of batch.coords."""
        return self.head(self.head_input(batch))

    def head_input(self, batch: SparseBatch) -> torch.Tensor:
        """(M, H) what the last linear layer (`head`) maps into the text space, per voxel."""
        if batch.num_voxels == 0:
            # No backend takes one: spconv fails deep inside (its own kernels or the kernel maps)
            # and MinkowskiEngine 0.5.4 segfaults; stop before a sparse tensor is built.
            raise ValueError(f"empty SparseBatch: no voxels to run the {self.backend.name} network on")
        b = self.backend
        x_in = b.make_input(batch, 2**self.levels)
        x = self.stem(x_in)
        for blk in self.stem_blocks:
            x = blk(x)
        skips = [x]
        for down, blocks in zip(self.down, self.enc_blocks, strict=True):
            x = down(x)
            for blk in blocks:
                x = blk(x)
            skips.append(x)
        for j, (up, blocks) in enumerate(zip(self.up, self.dec_blocks, strict=True)):
            x = up(x)
            x = b.cat(x, skips[self.levels - 1 - j])
            for blk in blocks:
                x = blk(x)
        x = b.output(x, x_in)
        if self.head_hidden is not None:
            x = self.head_hidden(x)
        return x

    def forward(self, batch: SparseBatch, factored: bool = False) -> torch.Tensor | LinearFeatures:
        """(N, out_channels) L2-normalised features of every point (voxel features gathered
        through batch.inverse; one per voxel when it is None). Normalised in float32 so AMP never
        divides in half precision.

        factored=True (training): the per-voxel features unnormalised and as the factors of the
        head, `LinearFeatures(head_input, head.weight, head.bias)`, so the losses work in the head's
        input width (losses.LinearFeatures). Through forward, so DistributedDataParallel sees it."""
        if factored:
            return LinearFeatures(self.head_input(batch), self.head.weight, self.head.bias)
        voxel = F.normalize(self.forward_voxels(batch).float(), dim=1, eps=1e-6)
        # inverse None: one row per voxel (the training objective's per-voxel loss; an identity
        # gather there cost an (M, D) copy and a sorted index_put in backward every step)
        return voxel if batch.inverse is None else voxel[batch.inverse]
