"""Built-in tools; importing this package registers them."""

from samecurve.tools import (
    attribution,
    baselines,
    combine,
    example_search,
    layer_norms,
    neural_cleanse,
    poison_detectors,
    strip,
    weight_stats,
)

__all__ = [
    "attribution", "baselines", "combine", "example_search", "layer_norms", "neural_cleanse",
    "poison_detectors", "strip", "weight_stats",
]
