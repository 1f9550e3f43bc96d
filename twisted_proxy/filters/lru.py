# -*- test-case-name: tests.test_lru -*-
"""
A bounded mapping keeping the most recently used entries, for the caches of
the filters (verified credentials and tokens).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Hashable, Optional, TypeVar

__all__ = ["LRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """
    At most C{size} entries; adding one more forgets the least recently
    used (read or written). Values are never L{None}.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: "OrderedDict[K, V]" = OrderedDict()

    def get(self, key: K) -> Optional[V]:
        """
        The value for C{key} (now the most recently used), or L{None}.
        """
        items = self._items
        value = items.get(key)
        if value is not None:
            items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """
        Remember C{value} for C{key} as the most recently used.
        """
        items = self._items
        items[key] = value
        items.move_to_end(key)
        if len(items) > self._size:
            items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
