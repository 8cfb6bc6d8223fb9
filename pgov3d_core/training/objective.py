"""What both training stages share: the labelled batch layout and the objective on it.

`LabelledBatch` holds clouds in one SparseBatch with per-point labels into a per-batch vocabulary
(sorted, so label ids do not depend on sample order) and consistency pairs; `AlignmentObjective`
is Eq. 5 on it (alignment to the labels' text embeddings + λ·consistency), with text embeddings
from a `TextEmbeddingBank`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pgov3d_core.labelling.text_encoder import TextEncoder
from pgov3d_core.losses import DEFAULT_CLASS_BALANCE, DEFAULT_LAMBDA, LossTerms, pgov3d_loss_voxels
from pgov3d_core.models.batch import SparseBatch


@dataclass
class LabelledBatch:
    """Clouds in one SparseBatch with per-point labels into `vocabulary` (-1: none) and
    consistency pairs (global point row, global point row). Stage 1: B frame pairs → 2B clouds
    [a_0, b_0, a_1, b_1, ...] with their matched points; stage 2: B scenes, no pairs."""

    sparse: SparseBatch
    labels: torch.Tensor
    vocabulary: list[str]
    pairs: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> LabelledBatch:
        return LabelledBatch(self.sparse.to(device, non_blocking), self.labels.to(device, non_blocking=non_blocking),
                             self.vocabulary, self.pairs.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> LabelledBatch:
        return LabelledBatch(self.sparse.pin_memory(), self.labels.pin_memory(), self.vocabulary,
                             self.pairs.pin_memory())


def batch_vocabulary(names_per_sample: Iterable[list[str]]) -> tuple[list[str], dict[str, int]]:
    """The batch's vocabulary (sorted union of the samples' names) and name → id."""
    vocabulary = sorted({n for names in names_per_sample for n in names})
    return vocabulary, {n: i for i, n in enumerate(vocabulary)}


def remap_labels(labels: torch.Tensor, names: list[str], lookup: dict[str, int]) -> torch.Tensor:
    """A sample's labels (into its own `names`, -1: none) as ids into the batch vocabulary."""
    table = torch.tensor([lookup.get(n, -1) for n in names] + [-1], dtype=torch.int64)
    return table[labels]  # label -1 indexes the trailing -1


class TextEmbeddingBank:
    """Text embeddings of entity names on the training device, computed once per name (the
    TextEncoder also keeps its own persistent cache across runs)."""

    def __init__(self, encoder: TextEncoder, device: torch.device):
        self.encoder = encoder
        self.device = device
        self._rows: dict[str, torch.Tensor] = {}

    @property
    def identity(self) -> str:
        return self.encoder.identity

    @property
    def names(self) -> list[str]:
        return sorted(self._rows)

    def __call__(self, names: list[str]) -> torch.Tensor:
        missing = [n for n in names if n not in self._rows]
        if missing:
            for n, e in zip(missing, self.encoder.encode(missing), strict=True):
                self._rows[n] = e.to(self.device)
        if not names:
            return torch.zeros((0, self.encoder.dim), device=self.device)
        return torch.stack([self._rows[n] for n in names])


class AlignmentObjective:
    """Eq. 5 on a LabelledBatch: alignment over all labelled points, consistency over the matched
    pairs A weighted by λ (stage 1; stage 2's batches have no pairs and λ = 0)."""

    def __init__(self, bank: TextEmbeddingBank, lam: float = DEFAULT_LAMBDA,
                 class_balance: float = DEFAULT_CLASS_BALANCE):
        self.bank = bank
        self.lam = float(lam)
        self.class_balance = float(class_balance)  # 0: Eq. 2's plain mean (losses.py)
        if self.class_balance < 0:  # refused when the run starts, not at its first step
            raise ValueError(f"loss.class_balance must be >= 0 (0: the paper's plain mean), got {class_balance}")

    def __call__(self, model: nn.Module, batch: LabelledBatch) -> LossTerms:
        sparse = batch.sparse
        # The network's per-voxel features as the factors of its linear head (through the model's
        # own forward, so DDP still sees the call); the per-point loss is evaluated on them exactly
        # (losses.LinearFeatures: no (voxels × text width) matrix is built).
        voxels = model(dataclasses.replace(sparse, inverse=None), factored=True)
        text = self.bank(batch.vocabulary)
        return pgov3d_loss_voxels(voxels, sparse.inverse, batch.labels, text, batch.pairs, self.lam,
                                  self.class_balance)

    def checkpoint_metadata(self) -> dict:
        return {"text_encoder": {"identity": self.bank.identity, "dim": int(self.bank.encoder.dim)},
                "vocabulary": self.bank.names}


