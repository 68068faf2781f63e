"""Name -> constructor tables, so a prior, guide, objective or network is swapped by name."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def __getitem__(self, name: str) -> T:
        self.check(name)
        return self._entries[name]

    def check(self, name: str) -> None:
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
