"""Built-in tools; importing this package registers them."""

from samecurve.tools import attribution, baselines, neural_cleanse, strip, weight_stats

__all__ = ["attribution", "baselines", "neural_cleanse", "strip", "weight_stats"]
