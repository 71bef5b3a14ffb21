"""BoundedLRU: a mapping that forgets its least recently used keys beyond a size limit.

For per-client and per-conversation state in a long-running server (rate-limit buckets, failed
logins, safety blocks): memory stays bounded however many clients come and go. Not thread-safe:
callers that share one across threads hold their own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class BoundedLRU(Generic[K, V]):
    """At most `max_size` keys; setting or touching a key makes it the most recently used, and
    setting one beyond the limit forgets the least recently used."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"BoundedLRU max_size must be at least 1, not {max_size}")
        self.max_size = max_size
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __getitem__(self, key: K) -> V:
        """The value (KeyError if absent); the key becomes the most recently used."""
        value = self._items[key]
        self._items.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        """Set the value as the most recently used; forget the oldest key beyond the limit."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def __delitem__(self, key: K) -> None:
        del self._items[key]

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: V | D) -> V | D: ...

    def get(self, key: K, default: V | D | None = None) -> V | D | None:
        """The value, or `default`; a look-up does not count as a use."""
        return self._items.get(key, default)

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove the key and return its value, or `default` (None) if absent."""
        return self._items.pop(key, default)

    def clear(self) -> None:
        self._items.clear()
