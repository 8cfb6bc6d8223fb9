"""Step-seeded sampling: which samples a step trains on, and their augmentation, are pure functions
of (seed, step), so a resumed run replays exactly what an uninterrupted run would have seen and
DDP ranks get disjoint shards without a DistributedSampler's epoch bookkeeping.

Global sample position p = step · (batch · world) + rank · batch + i. Position p belongs to epoch
p // len(dataset) and picks item perm_epoch[p mod len], perm_epoch a permutation seeded by
(seed, epoch); the sample's own randomness (partner frame, augmentation, point subsets, matching)
comes from a torch.Generator seeded by (seed, p). Worker count and rank layout do not change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class SampleSource(Protocol):
    """What a stage-specific dataset provides to the generic trainer."""

    def __len__(self) -> int: ...

    def get(self, index: int, generator: torch.Generator) -> Any: ...

    def collate(self, samples: list) -> Any: ...


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and Python versions,
    unlike hash())."""
    words: list[int] = []
    for k in keys:
        if isinstance(k, str):
            words.extend(k.encode())
            words.append(0x1F)
        else:
            words.append(int(k) & 0xFFFFFFFF)
            words.append((int(k) >> 32) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def seeded_generator(*keys: int | str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(*keys))
    return g


class SeededDataset(Dataset):
    """Map-style view of a SampleSource indexed by global sample position (see module docstring)."""

    def __init__(self, source: SampleSource, seed: int, shuffle: bool = True):
        if len(source) == 0:
            raise ValueError("the training dataset is empty (no frames/scenes found)")
        self.source = source
        self.seed = int(seed)
        self.shuffle = shuffle
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def item_index(self, position: int) -> int:
        n = len(self.source)
        epoch, offset = divmod(int(position), n)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._perm = torch.randperm(n, generator=seeded_generator(self.seed, "epoch", epoch))
            self._epoch = epoch
        return int(self._perm[offset])

    def __len__(self) -> int:  # positions are unbounded; DataLoader only needs this for len(loader)
        return len(self.source)

    def __getitem__(self, position: int):
        return self.source.get(self.item_index(position), seeded_generator(self.seed, "sample", int(position)))


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for steps start..stop-1, this rank's list of global sample positions."""

    def __init__(self, start_step: int, stop_step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
        self.start, self.stop = int(start_step), int(stop_step)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def positions(self, step: int) -> list[int]:
        base = step * self.batch_size * self.world_size + self.rank * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.positions(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
