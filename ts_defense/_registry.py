"""One shape for every string registry (noise families, attacks, recipes, losses, models): a
plain ``dict`` from name to object whose lookup names what is known and whose ``register``
refuses a name twice, so every registry fails the same way on a typo."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from ._checks import shown

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Objects of one ``kind`` (``"attack"``, ``"recipe"``, ...) by name."""

    def __init__(self, kind: str, items: Iterable[tuple[str, T]] | dict[str, T] = ()) -> None:
        super().__init__(items)
        self.kind = kind

    def lookup(self, name: object) -> T:
        """The object called ``name``; a ``ValueError`` listing the known names otherwise."""
        if not isinstance(name, str) or name not in self:
            known = ", ".join(map(repr, self))
            raise ValueError(f"unknown {self.kind} {shown(name)}; choose one of {known}")
        return self[name]

    def register(self, name: object, value: T, replace: bool = False) -> T:
        """Add ``value`` under ``name`` (a non-empty str not yet taken unless ``replace``)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind}'s name must be a non-empty str, got {shown(name)}")
        if name in self and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = value
        return value
