"""Tests for the bundled handwritten digits: registered, the right shapes at
any size and channel count, faithful to scikit-learn's pixels, and split into
disjoint pools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

import samecurve.data
from samecurve.data import DataError, Digits
from samecurve.data.arrays import SPLITS
from samecurve.registry import get


def test_registered_and_reexported() -> None:
    assert get("dataset", "digits") is Digits is samecurve.data.Digits
    assert Digits.name == "digits"
    assert Digits.num_classes == 10 and Digits.class_names == tuple("0123456789")


@pytest.mark.parametrize("size", [16, 28])
def test_sizes(size: int) -> None:
    ds = Digits(size=size)
    assert ds.input_shape == (1, size, size) and ds.num_classes == 10
    x, y = ds.sample(50, seed=0)
    assert x.shape == (50, 1, size, size) and x.dtype == np.float32
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [5] * 10
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9


def test_native_size_is_sklearn_over_16() -> None:
    ds = Digits(size=8)
    images, labels = load_digits(return_X_y=True)
    assert np.allclose(ds.x[:, 0], images.reshape(-1, 8, 8) / 16.0)
    assert np.array_equal(ds.y, labels)
    assert sum(ds.pool_size(s) for s in SPLITS) == 1797


def test_channels_three_repeats_grey() -> None:
    grey, rgb = Digits(size=16), Digits(size=16, channels=3)
    assert rgb.input_shape == (3, 16, 16)
    xg, yg = grey.sample(30, seed=2)
    xc, yc = rgb.sample(30, seed=2)
    assert np.array_equal(yg, yc)
    assert all(np.array_equal(xc[:, c], xg[:, 0]) for c in range(3))
    assert grey.config() != rgb.config()
    with pytest.raises(DataError, match="channels"):
        Digits(channels=2)


def test_deterministic_and_pools_disjoint() -> None:
    ds = Digits(size=16)
    a = ds.sample(40, seed=7, split="test")
    b = ds.sample(40, seed=7, split="test")
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], ds.sample(40, seed=8, split="test")[0])
    pools = [set(ds.pools[s].tolist()) for s in SPLITS]
    assert sum(map(len, pools)) == len(set().union(*pools)) == 1797
    assert json.loads(json.dumps(ds.config())) == ds.config()


def test_more_than_the_pool() -> None:
    ds = Digits(size=16)
    n = ds.pool_size("heldout") * 2 + 3
    x, y = ds.sample(n, seed=0, split="heldout")
    assert x.shape == (n, 1, 16, 16) and y.shape == (n,)
    assert x.min() >= 0.0 and x.max() <= 1.0
