"""A namespace's perceptual index on disk, served memory-mapped (issue 17).

A perceptual scope holds the request's text, so a namespace has many scopes and most are
small: one snapshot holds them all (a round names it as the scope :data:`ALL`), its rows
grouped by scope. It is a directory of plain files, written once and never changed:

* ``scopes.bin``: the scope ids (16 raw bytes each), sorted; ``scope_rows.bin``: where each
  scope's rows start (and, last, the row count); ``scope_tables.bin``: which block of tables
  each scope has, or -1;
* ``hashes.bin``: each row's phash (uint64); ``until.bin``: when its entry expires at the
  latest (uint32 unix seconds, 0: never), after which it is not proposed;
* ``keys.bin``, ``prefixes.bin``, ``order.bin``: each row's key, found by binary search
  (:mod:`imgcache.match.arrays`);
* ``tables.bin`` and ``table_offsets.bin``: for each scope of at least :data:`TABLE_MIN_ROWS`
  rows, the four multi-index hashing tables of
  :class:`~imgcache.match.perceptual.hamming.HammingIndex` (scope-relative rows); smaller
  scopes are scanned, which is as fast;
* ``meta.json``: the format and the counts the other files' sizes follow from.

A snapshot holds only entries live when it was written: each round drops the dead and the
expired. Everything but ``meta.json`` is read through ``numpy.memmap``; nothing is unpickled;
sizes and boundaries are checked on opening, and no row outside the scope searched is ever
proposed, whatever the files hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..._files import write_file
from ..arrays import (
    KEY_BYTES,
    expiry_seconds,
    key_prefixes,
    keys_in,
    map_array,
    raw_keys,
    read_meta,
    sorted_prefixes,
    write_array,
)
from .hamming import SUB_VALUES, SUBSTRINGS, TAIL_MAX_ROWS, Tables, scan, within

FORMAT = 1
ALL = "all"
"""The name a round gives the one snapshot of every perceptual scope."""
SCOPE_BYTES = 16
TABLE_MIN_ROWS = TAIL_MAX_ROWS
"""A scope this large gets tables (2 MiB of offsets each); a smaller one is scanned."""
_TABLE_SHAPE = (SUBSTRINGS, SUB_VALUES + 1)


def scope_bytes(scope_ids: Sequence[str]) -> np.ndarray:
    """32-hex scope ids as sortable 16-byte values."""
    return np.array([bytes.fromhex(s) for s in scope_ids], dtype=f"S{SCOPE_BYTES}")


class OwnRows:
    """A scope's entries to be written beside a snapshot's: keys, phashes, expiries."""

    def __init__(self, keys: list[str], hashes: list[int], until: list[float]) -> None:
        self.keys = keys
        self.hashes = np.array(hashes, dtype=np.uint64)
        self.until = expiry_seconds(until)


def write(directory: Path, base: MappedPhashes | None, live_base: np.ndarray | None,
          own: dict[str, OwnRows]) -> None:
    """Write a snapshot into the empty ``directory``: the base's rows still live (per
    ``live_base``) and ``own``'s, grouped by scope (files private to their user)."""
    base_ids = base.scope_ids if base is not None else np.zeros(0, dtype=f"S{SCOPE_BYTES}")
    ids = np.union1d(np.asarray(base_ids), scope_bytes(list(own)))
    columns: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    until: list[np.ndarray] = []
    if base is not None and base.rows:
        keep = np.flatnonzero(live_base) if live_base is not None else np.arange(base.rows)
        per_row = np.repeat(np.searchsorted(ids, np.asarray(base_ids)), np.diff(np.asarray(base.scope_rows, dtype=np.int64)))
        columns.append(per_row[keep])
        hashes.append(np.asarray(base.hashes[keep]))
        keys.append(np.asarray(base.keys.keys[keep]))
        until.append(np.asarray(base.until[keep]))
    for scope_id, rows in own.items():
        columns.append(np.full(len(rows.keys), np.searchsorted(ids, scope_bytes([scope_id]))[0], dtype=np.int64))
        hashes.append(rows.hashes)
        keys.append(raw_keys(rows.keys).reshape(-1, KEY_BYTES))
        until.append(rows.until)
    column = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    order = np.argsort(column, kind="stable")
    counts = np.bincount(column, minlength=len(ids))
    present = counts > 0
    all_hashes = np.concatenate(hashes)[order] if hashes else np.zeros(0, dtype=np.uint64)
    all_keys = np.concatenate(keys)[order] if keys else np.zeros((0, KEY_BYTES), dtype=np.uint8)
    scope_rows = np.concatenate([[0], np.cumsum(counts[present])]).astype(np.uint64)
    prefixes, key_order = sorted_prefixes(key_prefixes(all_keys))
    parts: dict[str, np.ndarray] = {
        "scopes.bin": ids[present], "scope_rows.bin": scope_rows,
        "hashes.bin": all_hashes, "keys.bin": all_keys, "prefixes.bin": prefixes, "order.bin": key_order,
        "until.bin": np.concatenate(until)[order] if until else np.zeros(0, dtype=np.uint32),
    }
    for name, array in parts.items():
        write_array(directory / name, [array])
    tabled, entries = _write_tables(directory, all_hashes, scope_rows)
    meta = {"format": FORMAT, "rows": len(all_hashes), "scopes": int(present.sum()), "tabled": tabled,
            "table_entries": entries}
    write_file(directory / "meta.json", json.dumps(meta).encode(), exclusive=True)


def _write_tables(directory: Path, hashes: np.ndarray, scope_rows: np.ndarray) -> tuple[int, int]:
    """Build and write the tables of every scope of :data:`TABLE_MIN_ROWS` rows or more, and
    which block each scope has (-1: none); returns how many blocks and entries."""
    blocks = np.full(len(scope_rows) - 1, -1, dtype=np.int64)
    tables: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    written = 0
    for at in range(len(blocks)):
        start, end = int(scope_rows[at]), int(scope_rows[at + 1])
        if end - start >= TABLE_MIN_ROWS:
            built = Tables.build(hashes[start:end])
            blocks[at] = len(tables)
            tables.append(built.order)
            offsets.append(built.offsets + written)
            written += len(built.order)
    write_array(directory / "tables.bin", tables)
    write_array(directory / "table_offsets.bin", offsets)
    write_array(directory / "scope_tables.bin", [blocks])
    return len(tables), written


class MappedPhashes:
    """A perceptual snapshot opened read-only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rows, scopes, tabled, entries = read_meta(directory, FORMAT, ("rows", "scopes", "tabled", "table_entries"))
        self.scope_ids = map_array(self.directory / "scopes.bin", f"S{SCOPE_BYTES}", (scopes,))
        self.scope_rows = map_array(self.directory / "scope_rows.bin", np.uint64, (scopes + 1,))
        self.scope_tables = map_array(self.directory / "scope_tables.bin", np.int64, (scopes,))
        self.hashes = map_array(self.directory / "hashes.bin", np.uint64, (self.rows,))
        self.until = map_array(self.directory / "until.bin", np.uint32, (self.rows,))
        """When each row's entry expires at the latest (unix seconds; 0: never)."""
        self.keys = keys_in(directory, self.rows)
        self._tables = map_array(self.directory / "tables.bin", np.uint32, (entries,))
        self._table_offsets = map_array(self.directory / "table_offsets.bin", np.int64, (tabled, *_TABLE_SHAPE))
        self._check(tabled, entries)

    def _check(self, tabled: int, entries: int) -> None:
        """ValueError unless the scopes' rows and tables fit the files: every search reads only
        its scope's rows, through at most four times their number of table entries."""
        bounds = np.asarray(self.scope_rows, dtype=np.int64)
        blocks = np.asarray(self.scope_tables)
        if bounds[0] != 0 or bounds[-1] != self.rows or np.any(np.diff(bounds) < 0):
            raise ValueError(f"{self.directory}: scope boundaries do not fit the snapshot")
        has = np.flatnonzero(blocks >= 0)
        used = blocks[has]
        if np.any(blocks < -1) or len(used) != tabled or not np.array_equal(np.sort(used), np.arange(tabled)):
            raise ValueError(f"{self.directory}: tables that are not one block a scope")
        sizes = np.diff(bounds)[has]
        if int(SUBSTRINGS * sizes.sum()) != entries:
            raise ValueError(f"{self.directory}: tables of another size than their scopes")
        for block, size in zip(used.tolist(), sizes.tolist()):
            offsets = np.asarray(self._table_offsets[block])
            base = int(offsets[0, 0])
            starts = base + size * np.arange(SUBSTRINGS)
            if (base < 0 or base + SUBSTRINGS * size > entries or np.any(offsets[:, 0] != starts)
                    or np.any(offsets[:, -1] != starts + size) or np.any(np.diff(offsets, axis=1) < 0)):
                raise ValueError(f"{self.directory}: tables that do not fit their scope")

    def scope(self, scope_id: str) -> tuple[int, int, int] | None:
        """A scope's rows ``[start, end)`` and its block of tables (-1: none), if it is here."""
        needle = scope_bytes([scope_id])
        at = int(np.searchsorted(self.scope_ids, needle)[0])
        if at >= len(self.scope_ids) or self.scope_ids[at] != needle[0]:
            return None
        return int(self.scope_rows[at]), int(self.scope_rows[at + 1]), int(self.scope_tables[at])

    def search(self, scope_id: str, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """The scope's rows within ``radius`` of ``query`` and their distances (unordered;
        the caller masks rows removed or expired)."""
        found = self.scope(scope_id)
        if found is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
        start, end, block = found
        if block >= 0:
            tables = Tables(self._tables, self._table_offsets[block], end - start)
            if tables.usable(radius):
                local = tables.candidates(query, radius).astype(np.int64)
                local = local[local < end - start]  # never a row of another scope
                rows, distances = within(self.hashes, local + start, query, radius)
                return rows, distances
        return scan(self.hashes, start, end, query, radius)
