"""One registry class behind every extension point (tasks, architectures, backends, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sampan.errors import ConfigError, NotFoundError

T = TypeVar("T")


def suggest(name: str, choices: list[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of name, or ''."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class Registry(Generic[T]):
    """Named entries of one kind; a duplicate name is an error, a miss suggests close names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under name."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is registered twice; pick another name.")
        self._entries[name] = obj

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            hint = suggest(name, list(self._entries))
            raise NotFoundError(
                f"Unknown {self.kind} {name!r}.{hint} See `sampan models` for what exists."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())
