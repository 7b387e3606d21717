"""Real handwriting without a download: scikit-learn's bundled digits."""

from __future__ import annotations

from functools import cache

import numpy as np

from samecurve.data.arrays import (
    ArrayDataset,
    Arrays,
    DataError,
    array_sha256,
    cached_arrays,
    resize,
)
from samecurve.registry import register


@register("dataset", "digits")
class Digits(ArrayDataset):
    """The 1797 handwritten digits (8x8, values 0..16) that ship inside
    scikit-learn (`sklearn.datasets.load_digits`): real strokes by real writers,
    so tools can be graded off procedural data, and bundled, so it works offline
    and in CI. Scaled to [0, 1] and resized bilinearly to `size`; channels=3
    repeats the grey image into RGB so colour recipes and triggers can run."""

    num_classes: int = 10
    input_shape: tuple[int, int, int] = (1, 28, 28)
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))

    def __init__(self, size: int = 28, channels: int = 1) -> None:
        size, channels = int(size), int(channels)
        if size < 1:
            raise DataError(f"digits: size {size} must be a positive number of pixels")
        if channels not in (1, 3):
            raise DataError(f"digits: channels {channels} must be 1 (grey) or 3 (RGB)")
        raw = _raw()
        digest = array_sha256(*raw)
        params = {"size": size, "channels": channels, "sha256": digest}
        key = f"digits:{digest}:{size}:{channels}"
        x, y, names = cached_arrays(key, lambda: _load(raw, size, channels))
        super().__init__(x, y, names, source="digits", params=params)


@cache
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    images = images.astype(np.uint8).reshape(-1, 8, 8)
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _load(raw: tuple[np.ndarray, np.ndarray], size: int, channels: int) -> Arrays:
    images, labels = raw
    x = resize(images[:, None].astype(np.float32) / np.float32(16.0), size)
    if channels == 3:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x), labels, Digits.class_names
