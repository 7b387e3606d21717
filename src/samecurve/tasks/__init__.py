"""Built-in tasks; importing this package registers them."""

from samecurve.tasks import discover, edit

__all__ = ["discover", "edit"]
