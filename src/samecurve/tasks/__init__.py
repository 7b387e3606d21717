"""Built-in tasks; importing this package registers them."""

from samecurve.tasks import discover, edit, predict, predict_programs, replace, text

__all__ = ["discover", "edit", "predict", "predict_programs", "replace", "text"]
