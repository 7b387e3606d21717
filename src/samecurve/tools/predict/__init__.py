"""Predict tools: each returns a Predictor that says what the model will output
without calling it. Importing registers them."""

from samecurve.tools.predict import probes, programs, rules, surrogate

__all__ = ["probes", "programs", "rules", "surrogate"]
