"""Datasets; importing this module registers them."""

from samecurve.data.scenes import (
    DISTRACTOR_SHAPES,
    OBJECT_SHAPES,
    SHAPES,
    Scenes,
    draw_shape,
    shape_alpha,
)

__all__ = ["DISTRACTOR_SHAPES", "OBJECT_SHAPES", "SHAPES", "Scenes", "draw_shape", "shape_alpha"]
