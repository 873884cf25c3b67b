"""One small name registry, for models, data sets, experiments, networks, kernels and model configs.

Registration is static: a package's ``__init__`` imports the modules that register into it, so everything is
registered once the package is imported (no lookup-time imports, no import circles, no swallowed import errors).

>>> KINDS = Registry("colour")
>>> @KINDS.register("red")
... def red(): return "#f00"
>>> KINDS.get("red")()
'#f00'
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, WAEError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → items of one kind. ``get`` of an unknown name raises ``error`` (a :class:`WAEError` subclass) with
    one line listing the known names; of a renamed one (:meth:`rename`), one line naming the new name."""

    def __init__(self, kind: str, error: type[WAEError] = ConfigError):
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}
        self.renamed: dict[str, str] = {}
        """Old name → new name: refused by :meth:`get` with a hint, mapped by :meth:`current` (stored files)."""

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def rename(self, old: str, new: str) -> None:
        """``old`` is now called ``new`` (registered): asked for by its old name it is refused with a hint."""
        if new not in self._items or old in self._items:
            raise RuntimeError(f"{self.kind} {old!r} cannot be renamed to {new!r}")
        self.renamed[old] = new

    def current(self, name):
        """``name``, or its new name when it was renamed: for names read from files written before the rename."""
        return self.renamed.get(name, name) if isinstance(name, str) else name

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            if isinstance(name, str) and name in self.renamed:
                raise self.error(f"{self.kind} {name!r} was renamed to {self.renamed[name]!r}") from None
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
