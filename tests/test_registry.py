"""The registry pattern shared by every pluggable part."""

from __future__ import annotations

import pytest

from genprint.registry import Registry, RegistryError


def test_register_get_and_list() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("b", colour="red")
    class B: ...

    reg.add("a", 1)
    assert reg.names() == ["a", "b"] and reg.get("b") is B and reg.meta("b") == {"colour": "red"}
    assert "a" in reg and len(reg) == 2


def test_unknown_name_lists_the_known_ones_and_duplicates_are_refused() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)
    with pytest.raises(RegistryError, match="unknown widget 'two'; known: one"):
        reg.get("two")
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("one", 2)


def test_remove_unregisters_and_refuses_unknown_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1, colour="red")
    reg.remove("one")
    assert "one" not in reg and len(reg) == 0
    reg.add("one", 2)  # the name is free again
    with pytest.raises(RegistryError, match="unknown widget 'two'"):
        reg.remove("two")
