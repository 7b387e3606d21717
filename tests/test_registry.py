from __future__ import annotations

from importlib import metadata

import pytest

from samecurve.registry import REGISTRY, Registry, UnknownName, get, names


def test_builtins_are_registered() -> None:
    assert {"oracle", "null", "random", "weight-stats", "neural-cleanse", "strip",
            "integrated-gradients", "saliency", "edge-detector", "centre"} <= set(names("tool"))
    assert "discover" in names("task")
    assert {"patch", "blend", "clean"} <= set(names("recipe"))
    assert get("tool", "neural-cleanse").name == "neural-cleanse"


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownName, match="did you mean 'neural-cleanse'"):
        get("tool", "neural-clense")


def test_unknown_name_without_a_close_match_lists_how_to_find_them() -> None:
    with pytest.raises(UnknownName, match="samecurve ls tools") as info:
        get("tool", "zzzzzzzz")
    assert "did you mean" not in str(info.value)


def test_a_name_cannot_be_registered_twice() -> None:
    r = Registry()
    r.add("tool", "x", object)
    with pytest.raises(ValueError, match="registered twice"):
        r.add("tool", "x", int)


def test_third_party_tools_arrive_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = metadata.EntryPoint(name="my-tool", value="collections:OrderedDict", group="samecurve.tools")

    def fake(group: str):
        return [ep] if group == "samecurve.tools" else []

    monkeypatch.setattr(metadata, "entry_points", fake)
    r = Registry()
    assert r.get("tool", "my-tool").__name__ == "OrderedDict"
    assert REGISTRY is not r
