"""In-process tier: an LRU bounded by the bytes it holds.

Besides bytes, it holds decoded objects with a declared size (:meth:`MemoryTier.set_object`):
the tiered store keeps whole entries here, manifest parsed and blobs attached, so that a
memory hit costs no parsing and no second lookup.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .base import MISSING, BaseTier

# Python object overhead per entry (key string, tuple, dict slot), so that a flood of tiny
# values cannot exceed the budget by an order of magnitude.
_OVERHEAD = 160


class MemoryTier(BaseTier):
    name = "memory"
    scope = "process"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, float | None, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return MISSING
            if item[1] is not None and item[1] <= time.monotonic():
                self._drop(key)
                return MISSING
            self._items.move_to_end(key)
            return item[0]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.set_object(key, value, len(value), ttl)

    def set_object(self, key: str, value: Any, size: int, ttl: float | None = None) -> None:
        """Hold any object, counted as ``size`` bytes (callers must not mutate it after)."""
        size += len(key) + _OVERHEAD
        if size > self.max_bytes:
            self.delete(key)  # too large to hold: never keep a stale smaller copy
            return
        deadline = None if ttl is None else time.monotonic() + ttl
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (value, deadline, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._items:
                self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _drop(self, key: str) -> None:
        self._bytes -= self._items.pop(key)[2]


