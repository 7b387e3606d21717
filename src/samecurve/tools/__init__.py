"""Built-in tools; importing this package registers them."""

from samecurve.tools import (
    attribution,
    baselines,
    layer_norms,
    neural_cleanse,
    strip,
    weight_stats,
)

__all__ = ["attribution", "baselines", "layer_norms", "neural_cleanse", "strip", "weight_stats"]
