"""Built-in tasks; importing this package registers them."""

from samecurve.tasks import discover, edit, predict

__all__ = ["discover", "edit", "predict"]
