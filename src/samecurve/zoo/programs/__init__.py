"""Hidden-program subjects: networks trained to implement a program we wrote, so
the program is the answer key of the replace family. Every module of this
package is imported (and so registers its recipes and architectures) when the
registry loads; a new subject family is a new file here."""

from importlib import import_module
from pkgutil import iter_modules

for _info in iter_modules(__path__):
    import_module(f"{__name__}.{_info.name}")
