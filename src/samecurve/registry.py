"""One registry for every kind of plug-in, filled by decorators in this package,
by the entry-point groups `samecurve.<kind>s` of any installed package, and by
the modules named in $SAMECURVE_PLUGINS (comma-separated), so a third party adds
a tool without forking; worker processes inherit the variable."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from importlib import import_module, metadata
from typing import Any, TypeVar

KINDS = ("tool", "task", "recipe", "arch", "dataset")
T = TypeVar("T")

# Modules whose import registers the built-in plug-ins.
_BUILTIN_MODULES = (
    "samecurve.data",
    "samecurve.data.text",
    "samecurve.zoo.archs",
    "samecurve.zoo.text_archs",
    "samecurve.zoo.recipes",
    "samecurve.zoo.text_recipes",
    "samecurve.zoo.programs",
    "samecurve.tools",
    "samecurve.tasks",
)


class UnknownName(KeyError):
    """A name that no registered plug-in has; the message suggests the closest."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        self._loaded = False

    def add(self, kind: str, name: str, obj: Any) -> None:
        if kind not in self._items:
            raise ValueError(f"unknown registry kind {kind!r}; use one of {KINDS}")
        existing = self._items[kind].get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice ({existing!r} and {obj!r})")
        self._items[kind][name] = obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in _BUILTIN_MODULES:
            import_module(module)
        for module in filter(None, os.environ.get("SAMECURVE_PLUGINS", "").split(",")):
            try:
                import_module(module.strip())
            except ImportError as exc:
                raise ImportError(
                    f"SAMECURVE_PLUGINS names {module!r}, which cannot be imported ({exc})"
                ) from exc
        for kind in KINDS:
            for ep in metadata.entry_points(group=f"samecurve.{kind}s"):
                self.add(kind, ep.name, ep.load())

    def get(self, kind: str, name: str) -> Any:
        self._load()
        items = self._items[kind]
        if name not in items:
            close = difflib.get_close_matches(name, items, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownName(
                f"unknown {kind} {name!r}{hint} (`samecurve ls {kind}s` lists them)"
            )
        return items[name]

    def names(self, kind: str) -> list[str]:
        self._load()
        return sorted(self._items[kind])


REGISTRY = Registry()


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class or function decorator: `@register("tool", "neural-cleanse")`."""

    def deco(obj: T) -> T:
        if isinstance(obj, type):
            obj.name = name  # type: ignore[attr-defined]  # one source of truth for the name
        REGISTRY.add(kind, name, obj)
        return obj

    return deco


def get(kind: str, name: str) -> Any:
    return REGISTRY.get(kind, name)


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)
