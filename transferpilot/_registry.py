"""One registry for everything chosen by name: models, strategies, stages.

>>> MODELS = Registry("model")
>>> @MODELS.register("tiny")
... def tiny(): ...
>>> MODELS.names()
['tiny']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries registered by decorator; a duplicate raises, an unknown lists the valid."""

    def __init__(self, kind: str, error: type[Exception] = KeyError) -> None:
        self.kind, self.error = kind, error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            self.add(name, item)
            return item

        return deco

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


class JsonData:
    """Mixin for (nested) dataclasses written to and read from JSON files."""

    def to_dict(self) -> dict[str, Any]:
        return _adapter(type(self)).dump_python(self, mode="json")

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        return _adapter(cls).validate_python(data)
