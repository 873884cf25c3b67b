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
    one line listing the known names."""

    def __init__(self, kind: str, error: type[WAEError] = ConfigError):
        self.kind = kind
        self.error = error
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
