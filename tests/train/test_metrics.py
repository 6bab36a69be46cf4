"""Pixel and object metrics on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from hpcnas.train.metrics import ObjectCounter, confusion, iou_per_class, match_objects, miou


def test_pixel_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 0, 0]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0]])
    conf = confusion(pred, truth, 2)
    # ignore pixels dropped; class 0: 5 right, 1 predicted as 1; class 1: 3 right, 1 predicted as 0
    assert conf.tolist() == [[5, 1], [1, 3]]
    assert iou_per_class(conf) == pytest.approx([5 / 7, 3 / 5])
    assert miou(conf) == pytest.approx((5 / 7 + 3 / 5) / 2)


def test_absent_class_is_not_averaged():
    conf = confusion(np.zeros((3, 3), int), np.zeros((3, 3), int), 2)
    assert np.isnan(iou_per_class(conf)[1]) and miou(conf) == 1.0


def square(mask, y, x, size):
    mask[y : y + size, x : x + size] = True


def test_object_matching_by_hand():
    truth = np.zeros((20, 20), bool)
    pred = np.zeros((20, 20), bool)
    square(truth, 0, 0, 4)  # A: 16 px
    square(pred, 0, 0, 4)  # A exactly: IoU 1
    square(truth, 10, 10, 4)  # B: 16 px
    square(pred, 10, 12, 4)  # shifted by 2: inter 8, union 24 -> IoU 1/3
    square(pred, 0, 15, 2)  # a false positive
    square(truth, 16, 0, 2)  # a missed object
    matched, n_pred, n_true = match_objects(pred, truth)
    assert n_pred == 3 and n_true == 3
    assert sorted(matched) == pytest.approx([1 / 3, 1.0])
    counter = ObjectCounter(thresholds=(0.1, 0.3, 0.5, 0.9))
    counter.add(pred, truth)
    curve = counter.curve()
    assert curve["precision"] == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert curve["recall"] == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])


def test_one_to_one_matching():
    """One big prediction over two true objects matches only one of them."""
    truth = np.zeros((10, 10), bool)
    square(truth, 0, 0, 3)
    square(truth, 0, 5, 2)
    pred = np.zeros((10, 10), bool)
    pred[0:3, 0:7] = True
    matched, n_pred, n_true = match_objects(pred, truth)
    assert (n_pred, n_true) == (1, 2) and matched == pytest.approx([9 / 21])


def test_diagonal_pixels_are_one_object():
    m = np.eye(5, dtype=bool)
    assert match_objects(m, m)[1] == 1
