"""Distillers (the replace family's tools): `distill(view) -> Program`. Every
module of this package is imported, and so registers its tools, when the
registry loads."""

from importlib import import_module
from pkgutil import iter_modules

for _info in iter_modules(__path__):
    import_module(f"{__name__}.{_info.name}")
