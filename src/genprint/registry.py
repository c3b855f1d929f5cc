"""One registry pattern for every pluggable part of genprint.

Methods, generator architectures, backbones, perturbations and losses are each kept in a
:class:`Registry`. A part registers itself with a decorator; users look parts up by name and get a
clear error listing the available names when a name is wrong::

    CAMERAS = Registry("camera")

    @CAMERAS.register("canon-like")
    def canon_like() -> Camera: ...

    CAMERAS.get("canon-like")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised when a name is not registered, or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of pluggable parts of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` with optional metadata."""

        def decorator(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> None:
        """Register ``obj`` under ``name``; refuses to silently replace another entry."""
        if name in self._entries and self._entries[name] is not obj:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._meta[name] = dict(meta)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (an error if it is not registered)."""
        self.get(name)
        del self._entries[name], self._meta[name]

    def get(self, name: str) -> T:
        """Return the entry called ``name``, or raise an error that lists the known names."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration time for ``name``."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
