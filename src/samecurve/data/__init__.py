"""Datasets; importing this module registers them."""

from samecurve.data.arrays import ArrayDataset, DataError
from samecurve.data.digits import Digits
from samecurve.data.files import Idx, ImageFolder, Npz, read_idx
from samecurve.data.scenes import (
    DISTRACTOR_SHAPES,
    OBJECT_SHAPES,
    SHAPES,
    Scenes,
    draw_shape,
    shape_alpha,
)

__all__ = [
    "DISTRACTOR_SHAPES",
    "OBJECT_SHAPES",
    "SHAPES",
    "ArrayDataset",
    "DataError",
    "Digits",
    "Idx",
    "ImageFolder",
    "Npz",
    "Scenes",
    "draw_shape",
    "read_idx",
    "shape_alpha",
]
