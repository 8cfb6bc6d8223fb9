"""PGOV3D training losses (paper §3.1, Eq. 2–5), exactly as written.

* Alignment (Eq. 2): L_align = 1/N Σ_i (1 − cos(f_i^p, f_i^t)) over the N points that carry an
  entity (label ≥ 0); f_i^t is the text embedding of point i's entity.
* Consistency (Eq. 3–4): L_cons = 1 − 1/|A| Σ_{(p1,p2)∈A} S(f_1^p, f_2^p), S = cosine similarity,
  A = matched point pairs of two frames of one sequence.
* Total (Eq. 5): L = L_align + λ·L_cons, λ = 0.2 in the paper.

One option departs from Eq. 2 and is off by default (`class_balance` = 0: the paper's plain mean):
with class_balance = p > 0 point i is weighted by n_e^-p, n_e = the points of its entity e in the
batch (a weighted mean; p = 1 counts every entity equally, p = 0.5 is the square-root balance
common in long-tailed segmentation). Why it exists: under the plain mean the frequent entities
(wall, floor) dominate the gradient and a small network never fits the rare ones (measured on the
synthetic rooms, README "Where learning stands").

Cosines are computed from explicitly normalised vectors, so the losses are exact for unnormalised
inputs too. Degenerate sets are defined as contributing 0 (the paper's averages are undefined for
N = 0 or |A| = 0): the result is an exact 0 that is still connected to the inputs' graph, so
`backward()` works and gives zero gradients, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_LAMBDA = 0.2
DEFAULT_CLASS_BALANCE = 0.0  # Eq. 2's plain mean; > 0 is the entity-balanced option (not the paper)
_EPS = 1e-8


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (Eq. 3) in float32."""
    a = F.normalize(a.float(), dim=-1, eps=_EPS)
    b = F.normalize(b.float(), dim=-1, eps=_EPS)
    return (a * b).sum(dim=-1)


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 that depends on `tensors` (so autograd sees them, with zero gradient)."""
    return sum((t.float().sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def _vocabulary_rows(labels: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Labels (>= 0) as int64 rows of text_embeddings; ValueError for one beyond the vocabulary."""
    lab = labels.long()
    if int(lab.max()) >= text_embeddings.shape[0]:
        raise ValueError(f"label {int(lab.max())} has no text embedding (vocabulary of {text_embeddings.shape[0]})")
    return lab


def _mean_over_points(per_point: torch.Tensor, lab: torch.Tensor, vocabulary: int, class_balance: float):
    """Eq. 2's mean of per-point terms, or with class_balance = p > 0 the mean weighted by
    n_e^-p (n_e: points of the same entity among `lab`)."""
    if class_balance == 0:
        return per_point.mean()
    if class_balance < 0:
        raise ValueError(f"class_balance must be >= 0 (0: the paper's plain mean), got {class_balance}")
    counts = torch.bincount(lab, minlength=vocabulary).to(per_point.dtype)
    weights = counts[lab].pow(-float(class_balance))
    return (per_point * weights).sum() / weights.sum()


def alignment_loss(point_features: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                   class_balance: float = 0.0) -> torch.Tensor:
    """Eq. 2. point_features (N, D); labels (N,) int, -1 = unlabelled, else a row of
    text_embeddings (V, D). Returns the mean of 1 − cos over labelled points (0 if there are none);
    `class_balance` > 0: the entity-balanced mean (module docstring; not the paper's)."""
    if labels.shape[0] != point_features.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {point_features.shape[0]} points")
    mask = labels >= 0
    if not bool(mask.any()):
        return _zero_like_graph(point_features, text_embeddings)
    lab = _vocabulary_rows(labels[mask], text_embeddings)
    per_point = 1.0 - cosine(point_features[mask], text_embeddings[lab])
    return _mean_over_points(per_point, lab, text_embeddings.shape[0], class_balance)


def consistency_loss(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Eq. 4. Row i of features_a and features_b are the two frames' features of matched pair i
    of A. Returns 1 − mean cosine (0 if A is empty)."""
    if features_a.shape != features_b.shape:
        raise ValueError(
            f"matched feature sets differ in shape: {tuple(features_a.shape)} vs {tuple(features_b.shape)}"
        )
    if features_a.shape[0] == 0:
        return _zero_like_graph(features_a, features_b)
    return 1.0 - cosine(features_a, features_b).mean()


def total_loss(alignment: torch.Tensor, consistency: torch.Tensor, lam: float = DEFAULT_LAMBDA) -> torch.Tensor:
    """Eq. 5: L_align + λ·L_cons."""
    return alignment + lam * consistency


@dataclass
class LossTerms:
    total: torch.Tensor
    alignment: torch.Tensor
    consistency: torch.Tensor

    def scalars(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "alignment": float(self.alignment.detach()),
                "consistency": float(self.consistency.detach())}


def _eq5_terms(
    align: torch.Tensor, pairs: torch.Tensor | None, lam: float, features_of, graph: torch.Tensor
) -> LossTerms:
    """Eq. 5 from the alignment term: the consistency of the per-point features `features_of(rows)`
    over `pairs` (P, 2), a zero that depends on `graph` when there are none."""
    if pairs is None or pairs.shape[0] == 0:
        cons = _zero_like_graph(graph)
    else:
        cons = consistency_loss(features_of(pairs[:, 0]), features_of(pairs[:, 1]))
    return LossTerms(total=total_loss(align, cons, lam), alignment=align, consistency=cons)


def pgov3d_loss(
    point_features: torch.Tensor,
    labels: torch.Tensor,
    text_embeddings: torch.Tensor,
    pairs: torch.Tensor | None = None,
    lam: float = DEFAULT_LAMBDA,
    class_balance: float = 0.0,
) -> LossTerms:
    """Eq. 5 on one batch: `pairs` (P, 2) are rows of point_features matched across frames (A);
    None or P = 0 gives a zero consistency term."""
    align = alignment_loss(point_features, labels, text_embeddings, class_balance)
    return _eq5_terms(align, pairs, lam, lambda rows: point_features[rows], point_features)


@dataclass
class LinearFeatures:
    """Features given by the factors of their last linear layer, f = hidden · weightᵀ + bias:
    hidden (M, H), weight (D, H), bias (D,) or None. The U-Net's head maps H = 128 (or the last
    decoder width) into the D = 384–768 text space; dot products and norms of f follow from H-wide
    products (f·t = h·(Wᵀt) + b·t, |f|² = hᵀ(WᵀW)h + 2h·Wᵀb + |b|²), so the losses never build the
    (M, D) feature matrix, whose elementwise passes and head GEMMs were about a third of a CPU
    training step. The same values and gradients as on the materialised features (test_losses)."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None

    def materialise(self) -> torch.Tensor:
        """The (M, D) features themselves (reference and tests)."""
        return F.linear(self.hidden.float(), self.weight.float(), None if self.bias is None else self.bias.float())

    def _gram(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(WᵀW (H, H), Wᵀb (H,), |b|² ()) in float32."""
        w = self.weight.float()
        b = self.bias.float() if self.bias is not None else torch.zeros(w.shape[0], device=w.device)
        return w.T @ w, w.T @ b, b @ b

    def text_dots(self, text: torch.Tensor) -> torch.Tensor:
        """(M, V) f · t for text embeddings (V, D)."""
        t = text.float()
        out = self.hidden.float() @ (t @ self.weight.float()).T
        return out if self.bias is None else out + t @ self.bias.float()

    def norms_and_pair_dots(self, pairs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(|f| per row (M,), f_i · f_j for each row pair (i, j) of `pairs` (P, 2), or None)."""
        gram, wb, bb = self._gram()
        h = self.hidden.float()
        q = h @ gram
        hu = h @ wb
        sq = (q * h).sum(dim=1) + 2.0 * hu + bb
        norms = sq.clamp_min(0.0).sqrt()
        if pairs is None:
            return norms, None
        i, j = pairs[:, 0], pairs[:, 1]
        return norms, (q[i] * h[j]).sum(dim=1) + hu[i] + hu[j] + bb


def pgov3d_loss_voxels(
    voxel_features: torch.Tensor | LinearFeatures,
    inverse: torch.Tensor,
    labels: torch.Tensor,
    text_embeddings: torch.Tensor,
    pairs: torch.Tensor | None = None,
    lam: float = DEFAULT_LAMBDA,
    class_balance: float = 0.0,
) -> LossTerms:
    """`pgov3d_loss` of the per-point features `voxel_features[inverse]`, without materialising
    them: every point of a voxel shares its feature, so each point's cosine is one entry of the
    (M, V) voxel-by-text cosine matrix. The same value and gradient (up to float rounding) at a
    fraction of the cost when N points ≫ M voxels (a full-scene cloud has ~4 points per voxel, and
    gathering and back-propagating N × D features dominated a stage-2 step)."""
    if labels.shape[0] != inverse.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {inverse.shape[0]} points")
    if isinstance(voxel_features, LinearFeatures):
        return _pgov3d_loss_linear(voxel_features, inverse, labels, text_embeddings, pairs, lam, class_balance)
    vf = voxel_features.float()
    mask = labels >= 0
    if not bool(mask.any()):
        align = _zero_like_graph(voxel_features, text_embeddings)
    else:
        lab = _vocabulary_rows(labels[mask], text_embeddings)
        # cos = (x · t̂) / |x|, scaling the small (M, V) product instead of normalising the (M, D)
        # features: the same cosines with one (M, D) elementwise pass and temporary fewer in
        # forward and backward (such passes were the largest non-convolution cost of a step).
        inv_norm = vf.norm(dim=-1, keepdim=True).clamp_min(_EPS).reciprocal()
        cos = (vf @ F.normalize(text_embeddings.float(), dim=-1, eps=_EPS).T) * inv_norm  # (M, V)
        align = _mean_over_points(1.0 - cos[inverse[mask], lab], lab, text_embeddings.shape[0], class_balance)
    # consistency's cosine() normalises the matched rows itself
    return _eq5_terms(align, pairs, lam, lambda rows: vf[inverse[rows]], voxel_features)


def _pgov3d_loss_linear(
    lf: LinearFeatures, inverse: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
    pairs: torch.Tensor | None, lam: float, class_balance: float,
) -> LossTerms:
    """`pgov3d_loss_voxels` of lf.materialise(), from the factors (LinearFeatures)."""
    mask = labels >= 0
    has_pairs = pairs is not None and pairs.shape[0] > 0
    voxel_pairs = inverse[pairs] if has_pairs else None
    norms, pair_dots = lf.norms_and_pair_dots(voxel_pairs)
    inv_norm = norms.clamp_min(_EPS).reciprocal()
    if not bool(mask.any()):
        align = _zero_like_graph(lf.hidden, lf.weight, text_embeddings)
    else:
        lab = _vocabulary_rows(labels[mask], text_embeddings)
        cos = lf.text_dots(F.normalize(text_embeddings.float(), dim=-1, eps=_EPS)) * inv_norm[:, None]  # (M, V)
        align = _mean_over_points(1.0 - cos[inverse[mask], lab], lab, text_embeddings.shape[0], class_balance)
    if not has_pairs:
        cons = _zero_like_graph(lf.hidden, lf.weight)
    else:
        cons = 1.0 - (pair_dots * inv_norm[voxel_pairs[:, 0]] * inv_norm[voxel_pairs[:, 1]]).mean()
    return LossTerms(total=total_loss(align, cons, lam), alignment=align, consistency=cons)
