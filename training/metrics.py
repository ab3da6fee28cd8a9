"""Task metrics, computed on numpy arrays so they are independent of the model code."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255


def top1_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the label."""
    return float(np.mean(predictions == labels)) if labels.size else 0.0


@dataclass
class ConfusionMatrix:
    """Accumulates a K x K confusion matrix (rows = truth) over any number of label arrays."""

    num_classes: int

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        keep = labels != IGNORE_INDEX
        truth, pred = labels[keep].astype(np.int64), predictions[keep].astype(np.int64)
        self.matrix += np.bincount(truth * self.num_classes + pred, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def iou_per_class(self) -> np.ndarray:
        """IoU of each class; NaN for classes absent from both truth and prediction."""
        intersection = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, intersection / union, np.nan)

    def mean_iou(self) -> float:
        return float(np.nanmean(self.iou_per_class()))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else 0.0


def shape_part_miou(predictions: np.ndarray, parts: np.ndarray) -> float:
    """Instance-averaged part mIoU (ShapeNet-part style) over shapes (S, P) of point labels.

    For each shape, IoU is averaged over the parts present in its truth or prediction, then the
    shapes are averaged; a part absent from both is not counted (stricter than awarding it 1).
    """
    shape_ious = []
    for pred, truth in zip(predictions, parts, strict=True):
        ious = []
        for part in np.union1d(np.unique(pred), np.unique(truth)):
            p, t = pred == part, truth == part
            ious.append(np.logical_and(p, t).sum() / np.logical_or(p, t).sum())
        shape_ious.append(np.mean(ious))
    return float(np.mean(shape_ious)) if shape_ious else 0.0


@dataclass
class Detections:
    """Per-image detections and ground truth, xyxy pixel boxes."""

    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    labels: list[np.ndarray]


def coco_stats(
    images: list[dict], annotations: list[dict], results: list[dict], num_classes: int, iou_type: str, **params: object
) -> list[float]:
    """pycocotools' summary statistics (AP, AP50, ...; each at least 0) of `results` against the
    ground truth `annotations` of `images`, `params` set on the evaluation's parameters; zeros
    when either list is empty."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not annotations or not results:
        return [0.0] * 12
    truth = COCO()
    truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType=iou_type)
        for name, value in params.items():
            setattr(evaluation.params, name, value)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(max(stat, 0.0)) for stat in evaluation.stats]


def mean_average_precision_50(
    detections: Detections,
    truth_boxes: list[np.ndarray],
    truth_labels: list[np.ndarray],
    num_classes: int,
) -> float:
    """COCO-style mAP at IoU 0.5 (101-point interpolation), computed by pycocotools."""
    images, annotations, results = [], [], []
    for image_id, (boxes, labels) in enumerate(zip(truth_boxes, truth_labels, strict=True)):
        images.append({"id": image_id})
        for box, label in zip(boxes, labels, strict=True):
            annotations.append(_coco_box(len(annotations) + 1, image_id, box, int(label)) | {"iscrowd": 0})
    for image_id, (boxes, scores, labels) in enumerate(
        zip(detections.boxes, detections.scores, detections.labels, strict=True)
    ):
        for box, score, label in zip(boxes, scores, labels, strict=True):
            results.append(_coco_box(0, image_id, box, int(label)) | {"score": float(score)})
    stats = coco_stats(images, annotations, results, num_classes, "bbox", iouThrs=np.array([0.5]), maxDets=[100] * 3)
    return stats[0]


def _coco_box(annotation_id: int, image_id: int, box: np.ndarray, label: int) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    width, height = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": label,
        "bbox": [x0, y0, width, height],
        "area": width * height,
    }


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), as in FID."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a = np.cov(features_a, rowvar=False)
    cov_b = np.cov(features_b, rowvar=False)
    # tr(sqrt(A B)) = tr(sqrt(sqrt(A) B sqrt(A))), whose argument is symmetric PSD.
    sqrt_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(sqrt_a @ cov_b @ sqrt_a)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
