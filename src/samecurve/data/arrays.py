"""Finite, in-memory image datasets: one base class that every real dataset
(bundled digits, users' IDX, image folders and .npz files) shares, so the
train/val/test/heldout partition and the sampling rules live in one place and a
model is never tested on an image it was trained on.

The partition is made once per dataset, from the labels alone, with a fixed
seed: each class is shuffled and spread evenly over [0, 1), the examples are
ordered by that position and the order is cut 70/10/10/10, so every pool gets
about its share of every class. `sample` then draws from one pool only.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")
SPLIT_PERCENT: tuple[int, ...] = (70, 10, 10, 10)  # same order as SPLITS
PARTITION_SEED = 20240611  # fixed: the partition must never depend on a run's seed
MAX_SHIFT = 2  # pixels, for the augmented copies drawn when n exceeds a pool
GAIN_JITTER = 0.1  # relative intensity jitter for the same copies

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]  # x, y, class names


class DataError(ValueError):
    """Bad user data: the message is one line naming the file, the problem and a fix."""


def min_examples() -> int:
    """Fewest examples for which no pool of the partition is empty."""
    return max(-(-100 // p) for p in SPLIT_PERCENT)


def partition(y: np.ndarray, num_classes: int, seed: int = PARTITION_SEED) -> dict[str, np.ndarray]:
    """Disjoint index pools {split: sorted indices}, stratified by class and
    deterministic in (y, num_classes, seed). Pool sizes are floor(percent * N)
    for all but train, which takes the rest."""
    y = np.asarray(y)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    position = np.empty(n, dtype=np.float64)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        k = members.size
        if k:
            position[members] = (rng.permutation(k) + rng.random(k)) / k
    order = np.argsort(position, kind="stable")
    sizes = [n * p // 100 for p in SPLIT_PERCENT[1:]]
    sizes.insert(0, n - sum(sizes))
    bounds = np.cumsum([0, *sizes])
    return {s: np.sort(order[bounds[i] : bounds[i + 1]]) for i, s in enumerate(SPLITS)}


def _balanced_quota(available: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many to take from each class: as even as availability allows (water
    filling), the last few spread over random classes. Needs n <= available.sum()."""
    quota = np.zeros_like(available)
    remaining = n
    while remaining > 0:
        open_ = np.flatnonzero(quota < available)
        share = remaining // open_.size
        if share == 0:
            quota[rng.choice(open_, remaining, replace=False)] += 1
            break
        add = np.minimum(share, available[open_] - quota[open_])
        quota[open_] += add
        remaining -= int(add.sum())
    return quota


def balanced_draw(
    pool: np.ndarray, y: np.ndarray, num_classes: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """n distinct indices from `pool` (n <= pool size), classes round-robin where
    the pool has enough of each, returned in random order."""
    labels = y[pool]
    available = np.bincount(labels, minlength=num_classes).astype(np.int64)
    quota = _balanced_quota(available, n, rng)
    picks = [rng.permutation(pool[labels == c])[: quota[c]] for c in range(num_classes) if quota[c]]
    chosen = np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)
    return rng.permutation(chosen)


def augment(
    x: np.ndarray, rng: np.random.Generator, max_shift: int = MAX_SHIFT, gain: float = GAIN_JITTER
) -> np.ndarray:
    """Light augmentation so repeated copies of an image are not duplicates: a
    random integer shift of up to `max_shift` pixels per axis with edge padding,
    then a random intensity gain in [1 - gain, 1 + gain]; clipped to [0, 1]."""
    n, c, h, w = x.shape
    dy = rng.integers(-max_shift, max_shift + 1, n)
    dx = rng.integers(-max_shift, max_shift + 1, n)
    rows = np.clip(np.arange(h)[None, :] - dy[:, None], 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] - dx[:, None], 0, w - 1)
    out = x[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    out *= rng.uniform(1.0 - gain, 1.0 + gain, (n, 1, 1, 1)).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def resize(x: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Bring (N, C, H, W) float images in [0, 1] to (N, C, size, size) with
    bilinear interpolation (antialiased when shrinking, so thin strokes survive),
    in chunks to bound memory. Non-square images are stretched."""
    size = int(size)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-2:] == (size, size):
        return x
    import torch
    import torch.nn.functional as F

    shrink = size < max(x.shape[-2:])
    out = np.empty((x.shape[0], x.shape[1], size, size), dtype=np.float32)
    for i in range(0, x.shape[0], chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[i : i + chunk]))
        r = F.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        out[i : i + chunk] = r.numpy()
    return np.clip(out, 0.0, 1.0, out=out)


def to_unit_float(a: np.ndarray, source: str) -> np.ndarray:
    """Pixel values as float32 in [0, 1]: uint8 (and other integers up to 255)
    divide by 255, booleans map to 0/1, floats must already lie in [0, 1]."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype.kind in "iu":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(
                f"{source}: integer pixel values span {lo}..{hi}, not 0..255; "
                "save them as uint8 or as floats in [0, 1]"
            )
        return (a.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    if a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{source}: pixel values include NaN or inf; clean them out first")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise DataError(
                f"{source}: float pixel values span {lo:g}..{hi:g}, not [0, 1]; "
                "divide by 255 or save them as uint8"
            )
        return a if lo >= 0.0 and hi <= 1.0 else np.clip(a, 0.0, 1.0)
    raise DataError(f"{source}: pixel dtype {a.dtype} is not numeric; save images as uint8")


def check_labels(y: np.ndarray, source: str) -> np.ndarray:
    """Labels as int64 after checking they are integers 0..K-1 (floats holding
    whole numbers are accepted, as some tools save labels that way)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{source}: labels have shape {y.shape}, expected 1-D (one per image)")
    hint = "labels must be integers 0..K-1; map class names to 0..K-1 first"
    if y.dtype.kind == "f":
        if y.size and not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{source}: labels are not whole numbers; {hint}")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{source}: labels have dtype {y.dtype}; {hint}")
    if y.size and y.min() < 0:
        raise DataError(f"{source}: labels include {int(y.min())}; {hint}")
    return y.astype(np.int64)


def array_sha256(*arrays: np.ndarray) -> str:
    """Content hash of arrays (dtype, shape and bytes), for config()."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_CACHE: OrderedDict[str, Arrays] = OrderedDict()
_CACHE_SIZE = 2  # loaded datasets can be hundreds of MB; keep only the latest few


def cached_arrays(key: str, load: Callable[[], Arrays]) -> Arrays:
    """Load once per key (which must cover the content, e.g. a file hash): the
    zoo re-creates a dataset for every split it draws. Cached arrays are
    read-only; `sample` always returns copies."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    x, y, names = load()
    x.setflags(write=False)
    y.setflags(write=False)
    _CACHE[key] = (x, y, names)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return x, y, names


class ArrayDataset:
    """A labelled image set held in memory, partitioned once into disjoint
    train/val/test/heldout pools and sampled per pool, so every finite dataset
    follows the same contract as the procedural ones.

    x: float32 (N, C, H, W) in [0, 1] with H == W; y: integer labels 0..K-1.
    K is len(class_names) when given, else max(y) + 1. `params` is what
    config() reports besides the partition settings; without it a hash of the
    arrays stands in, so the config still pins the data."""

    name = "arrays"
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        class_names: Sequence[str] | None = None,
        *,
        source: str = "arrays",
        params: dict | None = None,
    ) -> None:
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
            raise DataError(
                f"{source}: images have shape {x.shape}, expected (N, C, S, S) with C 1 or 3; "
                "resize to a square size first"
            )
        x = to_unit_float(x, source)
        y = check_labels(y, source)
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"{source}: {x.shape[0]} images but {y.shape[0]} labels; "
                "give exactly one label per image"
            )
        top = int(y.max()) + 1 if y.size else 0
        k = len(class_names) if class_names is not None else top
        if top > k:
            raise DataError(
                f"{source}: label {top - 1} but only {k} class names; "
                "labels must be integers 0..K-1"
            )
        distinct = np.unique(y).size
        if distinct < 2:
            raise DataError(
                f"{source}: {distinct} distinct class(es) in {y.shape[0]} images; "
                "a classifier needs at least 2 classes"
            )
        needed = min_examples()
        if x.shape[0] < needed:
            raise DataError(
                f"{source}: {x.shape[0]} images is too few to split "
                f"{'/'.join(map(str, SPLIT_PERCENT))} without an empty pool; "
                f"at least {needed} are needed"
            )
        self.source = source
        self.x = x
        self.y = y
        self.num_classes = k
        self.input_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        self.class_names = (
            tuple(str(c) for c in class_names)
            if class_names is not None
            else tuple(str(i) for i in range(k))
        )
        self.params = dict(params) if params is not None else {"sha256": array_sha256(x, y)}
        self.pools = partition(y, k)

    def config(self) -> dict:
        """JSON-able config: part of the content hash of cached subjects. Holds
        the dataset's own params (file paths and content hashes) and the
        partition and augmentation settings, since both shape what sample returns."""
        return {
            "name": self.name,
            **self.params,
            "split_percent": list(SPLIT_PERCENT),
            "partition_seed": PARTITION_SEED,
            "max_shift": MAX_SHIFT,
            "gain_jitter": GAIN_JITTER,
        }

    def pool_size(self, split: str) -> int:
        return int(self._pool(split).size)

    def _pool(self, split: str) -> np.ndarray:
        if split not in self.pools:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        return self.pools[split]

    def sample(self, n: int, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """x float32 (n, C, S, S) in [0, 1]; y int64 (n,), drawn from the named
        pool only; deterministic in (config, n, seed, split). Up to the pool
        size the draw is without replacement and class-balanced where the pool
        allows; beyond it, whole shuffled copies of the pool are added, every
        copy after the first lightly augmented (see `augment`)."""
        pool = self._pool(split)
        n = int(n)
        if n < 0:
            raise ValueError(f"cannot sample {n} examples")
        rng = np.random.default_rng([int(seed) & (2**64 - 1), SPLITS.index(split)])
        size = pool.size
        if n <= size:
            idx = balanced_draw(pool, self.y, self.num_classes, n, rng)
            return self.x[idx], self.y[idx].copy()
        copies = [rng.permutation(pool) for _ in range(n // size)]
        rest = n - size * len(copies)
        if rest:
            copies.append(balanced_draw(pool, self.y, self.num_classes, rest, rng))
        idx = np.concatenate(copies)
        x = self.x[idx]
        x[size:] = augment(x[size:], rng)
        order = rng.permutation(n)
        return x[order], self.y[idx][order]
