"""A copy-on-write mapping: how a step changes an account without copying its history."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class Overlay(MutableMapping[K, V], Generic[K, V]):
    """Copy-on-write: writes go to `changes`, reads fall through to `base`, never changed.

    A step of a step keeps two layers (all changes so far, the original), so applying n events
    costs O(changes), not O(n x history). Removing a key is not supported (the rules never do).
    """

    __slots__ = ("base", "changes")

    def __init__(self, changes: dict[K, V], base: Mapping[K, V]) -> None:
        self.changes = changes
        self.base = base

    @classmethod
    def over(cls, mapping: Mapping[K, V]) -> Overlay[K, V]:
        if isinstance(mapping, Overlay):
            return cls(dict(mapping.changes), mapping.base)
        return cls({}, mapping)

    def __getitem__(self, key: K) -> V:
        value = self.changes.get(key, _MISSING)
        return self.base[key] if value is _MISSING else value  # type: ignore[return-value]

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        value = self.changes.get(key, _MISSING)
        return self.base.get(key, default) if value is _MISSING else value  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self.changes or key in self.base

    def __setitem__(self, key: K, value: V) -> None:
        self.changes[key] = value

    def __delitem__(self, key: K) -> None:
        raise TypeError("an overlay does not remove keys")

    def __iter__(self) -> Iterator[K]:
        yield from self.changes
        for key in self.base:
            if key not in self.changes:
                yield key

    def __len__(self) -> int:
        return len(self.changes) + sum(1 for key in self.base if key not in self.changes)
