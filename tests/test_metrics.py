"""Metrics against small cases computed by hand."""

import numpy as np
import pytest

from easerve.training import metrics


def test_top1_accuracy_counts_matches():
    assert metrics.top1_accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


def test_confusion_matrix_iou_and_pixel_accuracy_by_hand():
    truth = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    confusion = metrics.ConfusionMatrix(3)
    confusion.update(pred, truth)
    # class 0: tp 1, fp 0, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: 1/1. Pixel 255 ignored.
    np.testing.assert_allclose(confusion.iou_per_class(), [0.5, 2 / 3, 1.0])
    assert confusion.mean_iou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert confusion.pixel_accuracy() == pytest.approx(4 / 5)


def test_mean_iou_skips_classes_absent_everywhere():
    confusion = metrics.ConfusionMatrix(4)
    confusion.update(np.array([0, 1]), np.array([0, 1]))
    assert np.isnan(confusion.iou_per_class()[3])
    assert confusion.mean_iou() == 1.0


def test_shape_part_miou_averages_per_shape():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 2, 3]])
    # shape 1: part 0 IoU 1/2, part 1 IoU 2/3; shape 2: part 2 IoU 3/4, part 3 IoU 0.
    expected = ((0.5 + 2 / 3) / 2 + (0.75 + 0.0) / 2) / 2
    assert metrics.shape_part_miou(pred, truth) == pytest.approx(expected)


def test_map50_perfect_detections_score_one_and_misses_lower_it():
    truth_boxes = [np.array([[10, 10, 50, 50]], float), np.array([[0, 0, 20, 20], [30, 30, 60, 60]], float)]
    truth_labels = [np.array([0]), np.array([1, 0])]
    perfect = metrics.Detections(
        boxes=[b.copy() for b in truth_boxes],
        scores=[np.array([0.9]), np.array([0.8, 0.7])],
        labels=[labels.copy() for labels in truth_labels],
    )
    assert metrics.mean_average_precision_50(perfect, truth_boxes, truth_labels, 2) == pytest.approx(1.0)
    # Shift the second image's class-0 box so its IoU drops below 0.5: class 0 recall halves.
    shifted = metrics.Detections(
        boxes=[truth_boxes[0].copy(), np.array([[0, 0, 20, 20], [45, 45, 75, 75]], float)],
        scores=perfect.scores,
        labels=perfect.labels,
    )
    score = metrics.mean_average_precision_50(shifted, truth_boxes, truth_labels, 2)
    assert 0.5 < score < 1.0


def test_frechet_distance_zero_for_same_set_and_grows_with_shift():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 4))
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by 2 on one axis: distance ~ 2^2 = 4.
    shifted = features + np.array([2.0, 0, 0, 0])
    assert metrics.frechet_distance(features, shifted) == pytest.approx(4.0, rel=1e-6)
