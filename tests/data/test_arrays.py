"""Tests for the shared in-memory dataset: the one partition (disjoint,
stratified, fixed) and the one sampler (deterministic, balanced, without
replacement up to the pool size, augmented copies beyond it) that every real
dataset uses, plus the resize helper and the input checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from samecurve.data.arrays import (
    SPLITS,
    ArrayDataset,
    DataError,
    augment,
    min_examples,
    partition,
    resize,
)


def _unique_images(n: int = 200, k: int = 4, size: int = 6, seed: int = 0) -> ArrayDataset:
    """Random images (all distinct) with labels 0..k-1, slightly unbalanced."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, size, size), dtype=np.float32)
    y = np.minimum(np.arange(n) * k // n + (np.arange(n) % 7 == 0), k - 1)
    return ArrayDataset(x, y)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_partition_is_disjoint_complete_stratified_and_fixed() -> None:
    y = np.repeat(np.arange(5), [100, 60, 40, 30, 20])
    pools = partition(y, 5)
    assert set(pools) == set(SPLITS)
    together = np.concatenate([pools[s] for s in SPLITS])
    assert np.array_equal(np.sort(together), np.arange(y.size))  # disjoint and complete
    assert [pools[s].size for s in SPLITS] == [175, 25, 25, 25]
    for s in ("val", "test", "heldout"):  # every class in every pool, near its share
        counts = np.bincount(y[pools[s]], minlength=5)
        assert np.all(np.abs(counts - np.bincount(y) * 0.1) <= 1.5), (s, counts)
    again = partition(y, 5)
    assert all(np.array_equal(pools[s], again[s]) for s in SPLITS)


def test_sample_contract_and_determinism() -> None:
    ds = _unique_images()
    x, y = ds.sample(60, seed=3)
    assert x.shape == (60, 1, 6, 6) and x.dtype == np.float32
    assert y.shape == (60,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    x2, y2 = ds.sample(60, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = ds.sample(60, seed=4)
    assert not np.array_equal(x, x3)
    assert len(_rows(x)) == 60  # without replacement
    assert np.bincount(y, minlength=4).tolist() == [15, 15, 15, 15]  # round-robin
    x.fill(0.0)  # a sample is a copy: scribbling on it leaves the dataset alone
    assert np.array_equal(ds.sample(60, seed=3)[0], x2)


def test_splits_never_share_an_image() -> None:
    ds = _unique_images()
    seen: dict[str, set[bytes]] = {}
    for split in SPLITS:
        size = ds.pool_size(split)
        x, _ = ds.sample(size, seed=0, split=split)
        seen[split] = _rows(x)
        assert len(seen[split]) == size
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not seen[a] & seen[b], (a, b)
    assert sum(len(v) for v in seen.values()) == 200


def test_balance_falls_back_when_a_class_runs_short() -> None:
    x = np.random.default_rng(0).random((100, 1, 4, 4), dtype=np.float32)
    y = np.r_[np.zeros(90), np.ones(10)].astype(np.int64)
    ds = ArrayDataset(x, y)
    _, yy = ds.sample(ds.pool_size("train"), seed=1)
    assert np.bincount(yy).tolist() == np.bincount(ds.y[ds.pools["train"]]).tolist()
    _, yy = ds.sample(10, seed=1)
    assert np.bincount(yy).tolist() == [5, 5]


def test_more_than_the_pool_cycles_with_augmentation() -> None:
    ds = _unique_images()
    pool = ds.pool_size("val")
    x, y = ds.sample(3 * pool + 7, seed=5, split="val")
    assert x.shape == (3 * pool + 7, 1, 6, 6) and y.shape == (3 * pool + 7,)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert len(_rows(x)) == x.shape[0]  # copies are not exact duplicates
    originals = _rows(ds.x[ds.pools["val"]])
    assert originals <= _rows(x)  # one untouched copy of the whole pool
    assert np.bincount(y).tolist() == pytest.approx(
        (3 * np.bincount(ds.y[ds.pools["val"]]) + np.array([2, 2, 2, 1])).tolist(), abs=1
    )
    x2, y2 = ds.sample(3 * pool + 7, seed=5, split="val")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_augment_is_an_edge_padded_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 7, 7), dtype=np.float32)
    out = augment(x, np.random.default_rng(1), max_shift=2, gain=0.0)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    for i in range(40):
        shifts = [
            padded[i, :, 2 - dy : 9 - dy, 2 - dx : 9 - dx]
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        ]
        assert any(np.array_equal(out[i], s) for s in shifts)


def test_resize() -> None:
    x = np.full((3, 1, 8, 8), 0.25, dtype=np.float32)
    assert np.allclose(resize(x, 20), 0.25) and resize(x, 20).shape == (3, 1, 20, 20)
    assert resize(x, 8) is x
    rng = np.random.default_rng(0)
    z = rng.random((5, 3, 30, 20), dtype=np.float32)  # non-square is stretched
    small = resize(z, 10)
    assert small.shape == (5, 3, 10, 10) and small.dtype == np.float32
    assert small.min() >= 0.0 and small.max() <= 1.0


def test_config_is_json_and_pins_the_arrays() -> None:
    a, b = _unique_images(seed=0), _unique_images(seed=1)
    assert json.loads(json.dumps(a.config())) == a.config()
    assert a.config() != b.config()
    assert a.config() == _unique_images(seed=0).config()


def test_bad_arrays() -> None:
    x = np.zeros((20, 1, 4, 4), dtype=np.float32)
    y = np.arange(20) % 2
    with pytest.raises(DataError, match=f"at least {min_examples()}"):
        ArrayDataset(x[:9], y[:9], source="tiny.npz")
    with pytest.raises(DataError, match=r"tiny\.npz.*at least 2 classes"):
        ArrayDataset(x, np.zeros(20, dtype=np.int64), source="tiny.npz")
    with pytest.raises(DataError, match="19 labels"):
        ArrayDataset(x, y[:19])
    with pytest.raises(DataError, match=re.escape("0..K-1")):
        ArrayDataset(x, y - 1)
    with pytest.raises(DataError, match="whole numbers"):
        ArrayDataset(x, y + 0.5)
    with pytest.raises(DataError, match=r"not \[0, 1\]"):
        ArrayDataset(x + 2.0, y)
    with pytest.raises(DataError, match="square"):
        ArrayDataset(np.zeros((20, 1, 4, 5), dtype=np.float32), y)
    with pytest.raises(DataError, match="class names"):
        ArrayDataset(x, y + 1, class_names=("a", "b"))
    with pytest.raises(ValueError, match="unknown split"):
        ArrayDataset(x, y).sample(3, seed=0, split="training")
    ok = ArrayDataset(x, y.astype(np.float64))  # whole-number floats are fine
    assert ok.num_classes == 2 and ok.class_names == ("0", "1")
