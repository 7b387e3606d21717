"""Built-in tasks; importing this package registers them."""

from samecurve.tasks import discover, edit, predict, replace

__all__ = ["discover", "edit", "predict", "replace"]
