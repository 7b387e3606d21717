"""samecurve: grade interpretability tools, baselines and adversaries on the same curve."""

__version__ = "0.1.0"
