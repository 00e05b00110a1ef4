"""A small LRU memo bounded by entry count and by the bytes its entries hold.

For memos of derived values (a call's arguments -> its built request): losing an entry only
costs rebuilding it. ``functools.lru_cache`` bounds the count only, so a flood of large keys
(100,000-character prompts) would hold gigabytes; here each entry is put with its size,
counted by the caller, who knows what the value keeps alive.

    memo: BoundedMemo[Request | None] = BoundedMemo(max_items=4096, max_bytes=8 << 20)
    found = memo.get(key, MISSING)  # MISSING, not None: None may be a remembered value
    if found is MISSING:
        found = build(key)
        memo.put(key, found, size_of(key, found))
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Final, Generic, TypeVar

V = TypeVar("V")



def deep_size(value: Any) -> int:
    """Bytes a tree of dicts, lists, strings, bytes and numbers (a parsed manifest) takes in
    this process, walked without recursion (a deeply nested value cannot overflow the stack).
    Objects shared within the tree are counted each time: an upper bound."""
    size, todo = 0, [value]
    while todo:
        item = todo.pop()
        size += sys.getsizeof(item)
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return size


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""A ``default`` for :meth:`BoundedMemo.get` that no remembered value can be."""

ENTRY_OVERHEAD = 120
"""Bytes of the memo's own slot per entry (ordered-dict node, tuple), added to each size."""


class BoundedMemo(Generic[V]):
    """Thread-safe LRU of at most ``max_items`` entries and ``max_bytes`` counted bytes.

    An entry larger than ``max_entry_bytes`` (default: a sixteenth of ``max_bytes``) is not
    kept: one huge entry would otherwise evict everything else for a single use.
    """

    __slots__ = ("_bytes", "_entries", "_lock", "max_bytes", "max_entry_bytes", "max_items")

    def __init__(self, max_items: int, max_bytes: int, *,
                 max_entry_bytes: int | None = None) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a memo needs max_items >= 1 and max_bytes >= 1")
        self.max_items = max_items
        self.max_bytes = max_bytes
        entry = max_bytes // 16 if max_entry_bytes is None else max_entry_bytes
        self.max_entry_bytes = min(entry, max_bytes)
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> V | Any:
        """The value put under ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> bool:
        """Keep ``value`` under ``key``, counted as ``size`` bytes (the key's included), evicting
        the least recently used entries beyond the bounds. False when it is too large to keep."""
        size += ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_entry_bytes:  # not kept, and no older value left behind either
                return False
            self._entries[key] = (value, size)
            self._bytes += size
            while len(self._entries) > self.max_items or self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][1]
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """The bytes the entries are counted as (at most ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
