"""Attribution metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from samecurve.metrics import attribution_correlation, pointing_game


def _footprint() -> np.ndarray:
    fp = np.zeros((4, 4), dtype=bool)
    fp[0:2, 0:2] = True  # 4 of 16 pixels
    return fp


def test_correlation_perfect_and_inverted() -> None:
    fp = _footprint().astype(float)
    assert attribution_correlation(fp[None], fp) == pytest.approx(1.0)
    assert attribution_correlation((1.0 - fp)[None], fp) == pytest.approx(-1.0)


def test_correlation_uses_magnitude_of_map() -> None:
    fp = _footprint()
    # negative attributions on the footprint: |map| == footprint -> 1, not -1
    assert attribution_correlation(-3.0 * fp[None].astype(float), fp) == pytest.approx(1.0)


def test_correlation_constant_map_and_mean_over_inputs() -> None:
    fp = _footprint()
    const = np.full((1, 4, 4), 0.3)
    assert attribution_correlation(const, fp) == 0.0
    # mean of 1.0 (perfect) and 0.0 (constant) -> 0.5
    maps = np.concatenate([fp[None].astype(float), const])
    assert attribution_correlation(maps, fp) == pytest.approx(0.5)


def test_correlation_undefined() -> None:
    fp = _footprint()
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(attribution_correlation(maps, np.ones((4, 4), dtype=bool)))  # blend
    assert math.isnan(attribution_correlation(maps, np.full((4, 4), 0.1)))  # soft blend mask
    assert math.isnan(attribution_correlation(np.zeros((0, 4, 4)), fp))


def test_correlation_nchw_sums_magnitude_over_channels() -> None:
    fp = _footprint().astype(float)
    # channels +0.5*fp and -0.5*fp: |.| summed over C gives fp exactly -> 1
    maps = np.stack([0.5 * fp, -0.5 * fp, np.zeros_like(fp)])[None]  # (1, 3, 4, 4)
    assert attribution_correlation(maps, fp) == pytest.approx(1.0)


def test_shape_errors() -> None:
    fp = _footprint()
    with pytest.raises(ValueError):
        attribution_correlation(np.zeros((1, 5, 5)), fp)
    with pytest.raises(ValueError):
        pointing_game(np.zeros((4, 4)), fp)


def test_pointing_game_inside_outside() -> None:
    fp = _footprint()
    inside = np.zeros((4, 4))
    inside[1, 1] = 1.0
    outside = np.zeros((4, 4))
    outside[3, 3] = 1.0
    assert pointing_game(inside[None], fp) == 1.0
    assert pointing_game(outside[None], fp) == 0.0
    # mean over the two inputs: (1 + 0) / 2
    assert pointing_game(np.stack([inside, outside]), fp) == pytest.approx(0.5)


def test_pointing_game_splits_ties() -> None:
    fp = _footprint()
    # uniform map: all 16 pixels tie, 4 lie in the footprint -> 4/16
    assert pointing_game(np.ones((1, 4, 4)), fp) == pytest.approx(0.25)
    # two tied maxima, one in, one out -> 1/2
    two = np.zeros((1, 4, 4))
    two[0, 0, 0] = 2.0
    two[0, 3, 3] = 2.0
    assert pointing_game(two, fp) == pytest.approx(0.5)


def test_pointing_game_magnitude_and_nchw() -> None:
    fp = _footprint()
    m = np.zeros((1, 2, 4, 4))
    m[0, 0, 0, 1] = -5.0  # largest magnitude, inside
    m[0, 1, 3, 3] = 3.0  # largest signed value, outside
    assert pointing_game(m, fp) == 1.0


def test_pointing_game_undefined() -> None:
    maps = np.ones((1, 4, 4))
    assert math.isnan(pointing_game(maps, np.ones((4, 4), dtype=bool)))
    assert math.isnan(pointing_game(maps, np.zeros((4, 4), dtype=bool)))
    assert math.isnan(pointing_game(np.zeros((0, 4, 4)), _footprint()))
