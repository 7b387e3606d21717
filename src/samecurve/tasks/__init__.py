"""Built-in tasks; importing this package registers them."""

from samecurve.tasks import discover

__all__ = ["discover"]
