"""Target and trigger metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from samecurve.metrics import attack_success, mask_correlation, mask_iou, target_top1


def test_target_top1() -> None:
    assert target_top1([3, 1], 3) == 1.0
    assert target_top1((1, 3), 3) == 0.0  # right class, but not first
    assert target_top1([], 3) == 0.0


def test_attack_success() -> None:
    # 3 of 4 predictions hit class 1
    assert attack_success(np.array([1, 2, 1, 1]), 1) == pytest.approx(0.75)
    assert attack_success(torch.tensor([0, 0, 5, 5, 5]), 5) == pytest.approx(0.6)
    assert math.isnan(attack_success(np.array([], dtype=int), 1))


def _square_and_rect() -> tuple[np.ndarray, np.ndarray]:
    rec = np.zeros((6, 6))
    rec[0:2, 0:2] = 0.6  # 2x2 square: 4 pixels
    true = np.zeros((6, 6), dtype=bool)
    true[0:2, 1:4] = True  # 2x3 rectangle: 6 pixels
    return rec, true


def test_mask_iou_hand_example() -> None:
    rec, true = _square_and_rect()
    # overlap is column 1 of rows 0-1: 2 pixels; union 4 + 6 - 2 = 8 -> 2/8
    assert mask_iou(rec, true) == pytest.approx(0.25)
    # float footprint: > 0 means touched
    assert mask_iou(rec, true.astype(float) * 0.3) == pytest.approx(0.25)


def test_mask_iou_threshold() -> None:
    rec, true = _square_and_rect()
    # 0.6 < 0.7: recovered mask is empty, intersection 0 -> 0
    assert mask_iou(rec, true, threshold=0.7) == 0.0
    # threshold is inclusive: 0.6 >= 0.6
    assert mask_iou(rec, true, threshold=0.6) == pytest.approx(0.25)
    # recovered exactly the footprint -> 1
    assert mask_iou(true.astype(float), true) == 1.0


def test_mask_iou_empty_and_shape() -> None:
    empty = np.zeros((4, 4))
    assert mask_iou(empty, empty.astype(bool)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))


def test_mask_correlation() -> None:
    m = np.zeros((4, 4))
    m[1:3, 1:3] = 1.0
    assert mask_correlation(m, m) == pytest.approx(1.0)
    assert mask_correlation(1.0 - m, m) == pytest.approx(-1.0)
    assert math.isnan(mask_correlation(m, np.full((4, 4), 0.2)))
    assert mask_correlation(np.full((4, 4), 0.7), m) == 0.0


def test_mask_correlation_hand_example() -> None:
    # x = [1,0,0,0], y = [1,1,0,0]: centred x = [.75,-.25,-.25,-.25], y = [.5,.5,-.5,-.5];
    # sum xy = .375 - .125 + .125 + .125 = .5; sum x^2 = .75, sum y^2 = 1 -> .5/sqrt(.75)
    x = np.array([[1.0, 0.0], [0.0, 0.0]])
    y = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert mask_correlation(x, y) == pytest.approx(1 / math.sqrt(3))
    with pytest.raises(ValueError, match="shape"):
        mask_correlation(x, np.zeros((3, 3)))
