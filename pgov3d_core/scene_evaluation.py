"""Scene evaluation: zero-shot 3D semantic segmentation metrics of whole scene clouds (mIoU, mAcc,
base/novel hIoU), reports and query hit statistics (per-frame accuracy during training is
`pgov3d_core.training.frame_accuracy`).

Conventions follow the ScanNet benchmark: a confusion matrix over ground-truth classes (rows) and
predictions (columns); points whose ground truth is the ignore label are excluded; IoU_c =
TP / (TP + FP + FN) and Acc_c = TP / (TP + FN) for classes present in the ground truth; mIoU and
mAcc average over those classes. The base/novel protocol (paper Table 2) uses the splits of the
19 ScanNet classes without "otherfurniture" introduced by PLA (Ding et al., CVPR 2023) and
reports hIoU = 2·mIoU^B·mIoU^N / (mIoU^B + mIoU^N).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.data.label_sets import CLASS_LABELS_20

IGNORE_INDEX = -1

# Novel classes of each split, as names of the ScanNet 20-class list (index order of PLA's configs).
BASE_NOVEL_SPLITS: dict[str, tuple[str, ...]] = {
    "B15/N4": ("sofa", "bookshelf", "desk", "toilet"),
    "B12/N7": ("bed", "chair", "table", "bookshelf", "picture", "sink", "bathtub"),
    "B10/N9": ("bookshelf", "picture", "counter", "desk", "refrigerator", "shower curtain", "toilet", "sink",
               "bathtub"),
}


def split_classes(split: str, class_names=tuple(CLASS_LABELS_20[:19])) -> tuple[list[int], list[int]]:
    """(base indices, novel indices) of `split` over `class_names` (the 19 ScanNet classes)."""
    if split not in BASE_NOVEL_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(BASE_NOVEL_SPLITS)}")
    novel_names = BASE_NOVEL_SPLITS[split]
    names = list(class_names)
    missing = [n for n in novel_names if n not in names]
    if missing:
        raise ValueError(f"split {split}: classes {missing} are not in the label set")
    novel = [names.index(n) for n in novel_names]
    base = [i for i in range(len(names)) if i not in novel]
    return base, sorted(novel)


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C + 1) int64 counts: rows = ground truth, columns = prediction, and a last column for
    predictions outside [0, C) (e.g. -1, "no confident label"), which count as wrong. Ground truth
    equal to `ignore_index` (or outside [0, C)) is skipped."""
    pred = torch.as_tensor(pred).reshape(-1).long().cpu()
    gt = torch.as_tensor(gt).reshape(-1).long().cpu()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.numel()} points, ground truth {gt.numel()}")
    keep = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    pred, gt = pred[keep], gt[keep]
    pred = torch.where((pred >= 0) & (pred < num_classes), pred, torch.full_like(pred, num_classes))
    idx = gt * (num_classes + 1) + pred
    conf = torch.bincount(idx, minlength=num_classes * (num_classes + 1))
    return conf.reshape(num_classes, num_classes + 1).numpy().astype(np.int64)


@dataclass
class SegmentationMetrics:
    class_names: list[str]
    iou: list[float]  # NaN for classes absent from the ground truth
    acc: list[float]
    points: list[int]  # ground-truth points per class
    miou: float
    macc: float
    overall_acc: float

    @classmethod
    def from_predictions(cls, pred, gt, class_names: list[str], ignore_index: int = IGNORE_INDEX):
        return cls.from_confusion(confusion_matrix(pred, gt, len(class_names), ignore_index), class_names)

    @classmethod
    def from_confusion(cls, conf: np.ndarray, class_names: list[str]):
        """From a (C, C) or (C, C + 1) confusion matrix (see `confusion_matrix`)."""
        conf = np.asarray(conf, dtype=np.float64)
        c = len(class_names)
        if conf.shape not in ((c, c), (c, c + 1)):
            raise ValueError(f"confusion matrix {conf.shape} does not fit {c} classes")
        tp = np.diag(conf[:, :c])
        gt_count = conf.sum(axis=1)
        pred_count = conf[:, :c].sum(axis=0)
        present = gt_count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(present, tp / (gt_count + pred_count - tp), np.nan)
            acc = np.where(present, tp / gt_count, np.nan)
        total = gt_count.sum()
        return cls(
            class_names=list(class_names),
            iou=iou.tolist(),
            acc=acc.tolist(),
            points=gt_count.astype(np.int64).tolist(),
            miou=float(np.nanmean(iou)) if present.any() else float("nan"),
            macc=float(np.nanmean(acc)) if present.any() else float("nan"),
            overall_acc=float(tp.sum() / total) if total else float("nan"),
        )

    def subset_miou(self, indices: list[int]) -> float:
        vals = [self.iou[i] for i in indices if not np.isnan(self.iou[i])]
        return float(np.mean(vals)) if vals else float("nan")


def harmonic_iou(miou_base: float, miou_novel: float) -> float:
    if miou_base + miou_novel == 0:
        return 0.0
    return 2.0 * miou_base * miou_novel / (miou_base + miou_novel)


@dataclass
class BaseNovelMetrics:
    split: str
    miou_base: float
    miou_novel: float
    hiou: float


def base_novel_metrics(metrics: SegmentationMetrics, split: str) -> BaseNovelMetrics:
    base, novel = split_classes(split, metrics.class_names[:19] if len(metrics.class_names) >= 19
                                else metrics.class_names)
    b, n = metrics.subset_miou(base), metrics.subset_miou(novel)
    return BaseNovelMetrics(split, b, n, harmonic_iou(b, n))


def prompts(class_names: list[str], template: str = "a {} in a scene") -> list[str]:
    return [template.format(c) for c in class_names]


# ------------------------------------------------------------------ reports


def write_report(out_dir: str | Path, results: dict[str, SegmentationMetrics], title: str = "pgov3d evaluation",
                 extra: dict | None = None) -> dict[str, Path]:
    """Markdown + JSON report of one or more runs (e.g. {"stage 1": m1, "stage 2": m2}) and a
    per-class IoU bar chart PNG. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = next(iter(results.values())).class_names
    lines = [f"# {title}", "", "| run | mIoU | mAcc | overall acc |", "| --- | --- | --- | --- |"]
    for run, m in results.items():
        lines.append(f"| {run} | {100 * m.miou:.1f} | {100 * m.macc:.1f} | {100 * m.overall_acc:.1f} |")
    lines += ["", "| class | points | " + " | ".join(f"IoU {r}" for r in results) + " |",
              "| --- | --- | " + " | ".join("---" for _ in results) + " |"]
    first = next(iter(results.values()))
    for i, name in enumerate(names):
        cells = " | ".join("–" if np.isnan(m.iou[i]) else f"{100 * m.iou[i]:.1f}" for m in results.values())
        lines.append(f"| {name} | {first.points[i]} | {cells} |")
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    js = out / "report.json"
    js.write_text(json.dumps({"title": title, "runs": {k: asdict(v) for k, v in results.items()}, **(extra or {})},
                             indent=2, allow_nan=True))

    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names)), 4.0))
    width = 0.8 / len(results)
    x = np.arange(len(names))
    for k, (run, m) in enumerate(results.items()):
        ax.bar(x + k * width, np.nan_to_num(np.array(m.iou)) * 100, width, label=f"{run} (mIoU {100 * m.miou:.1f})")
    ax.set_xticks(x + 0.4 - width / 2, names, rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    png = out / "per_class_iou.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return {"markdown": md, "json": js, "iou_png": png}


def render_top_down(out_png: str | Path, xyz: np.ndarray, pred: np.ndarray, gt: np.ndarray,
                    class_names: list[str], resolution: float = 0.03, below_top: float | None = 0.3) -> Path:
    """Side-by-side top-down views of predicted and ground-truth labels (highest point wins).

    `below_top` (m): only points lower than the cloud's top minus this are drawn, so a ceiling (and
    anything within that distance of the top) does not cover the room's contents; None draws all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20", max(len(class_names), 1))
    palette = (np.array([cmap(i)[:3] for i in range(len(class_names))]) * 255).astype(np.uint8)
    lo = xyz[:, :2].min(0)
    ij = ((xyz[:, :2] - lo) / resolution).astype(np.int64)
    wh = ij.max(0) + 1
    order = np.argsort(xyz[:, 2])
    if below_top is not None and len(xyz):
        cut = float(xyz[:, 2].max()) - float(below_top)
        order = order[xyz[order, 2] < cut]

    def image(labels):
        img = np.full((wh[1], wh[0], 3), 255, np.uint8)
        lab = labels[order]
        ok = lab >= 0
        img[wh[1] - 1 - ij[order][ok, 1], ij[order][ok, 0]] = palette[lab[ok] % len(palette)]
        return img

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    below = "" if below_top is None else f" (below {cut:.2f} m)" if len(xyz) else ""
    for ax, labels, name in ((axes[0], pred, "prediction"), (axes[1], gt, "ground truth")):
        ax.imshow(image(np.asarray(labels)))
        ax.set_title(name + below)
        ax.axis("off")
    gt, pred = np.asarray(gt), np.asarray(pred)
    present = sorted(set(gt[gt >= 0].tolist()) | set(pred[pred >= 0].tolist()))
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[i % len(palette)] / 255) for i in present]
    fig.legend(handles, [class_names[i] for i in present], loc="lower center", ncol=min(8, len(present)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


@dataclass
class QueryHits:
    query: str
    points: int  # map points labelled with this query
    precision: float  # of those, the fraction whose nearest ground-truth point has the query's class
    recall: float  # of the ground-truth points of the class that the map observed, the fraction labelled


def query_hit_statistics(map_xyz: np.ndarray, map_labels: np.ndarray, queries: list[str], truth_xyz: np.ndarray,
                         truth_labels: np.ndarray, class_names: list[str], radius: float = 0.05,
                         query_classes: list[str] | None = None) -> list[QueryHits]:
    """How well a map's per-point query labels (-1 = none) match a labelled ground-truth cloud.
    Query q is scored against class `query_classes[q]` (default: the query text itself, for
    queries that are class names); a query without a class gets precision/recall NaN."""
    from scipy.spatial import cKDTree

    truth_tree = cKDTree(truth_xyz)
    nearest = truth_labels[truth_tree.query(map_xyz)[1]] if len(map_xyz) else np.zeros(0, np.int64)
    observed = cKDTree(map_xyz).query(truth_xyz)[0] < radius if len(map_xyz) else np.zeros(len(truth_xyz), bool)
    out = []
    targets = queries if query_classes is None else query_classes
    if len(targets) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(targets)} query classes")
    for q, (name, target) in enumerate(zip(queries, targets, strict=True)):
        mine = map_labels == q
        cls = class_names.index(target) if target in class_names else None
        if cls is None:
            out.append(QueryHits(name, int(mine.sum()), float("nan"), float("nan")))
            continue
        precision = float(np.mean(nearest[mine] == cls)) if mine.any() else float("nan")
        gt = (truth_labels == cls) & observed
        if gt.any() and mine.any():
            recall = float(np.mean(cKDTree(map_xyz[mine]).query(truth_xyz[gt])[0] < radius))
        else:
            recall = float("nan") if not gt.any() else 0.0
        out.append(QueryHits(name, int(mine.sum()), precision, recall))
    return out
