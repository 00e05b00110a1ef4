"""A semantic scope's snapshot on disk, served memory-mapped (issue 17).

A snapshot is a directory of plain files, written once and never changed:

* ``graph.usearch``: the usearch HNSW graph (int8 vectors), labels = row numbers, mapped
  with ``view`` so that every process on a host searches the same pages of the page cache;
* ``keys.bin``: each row's 32-byte key digest, in row order;
* ``prefixes.bin`` and ``order.bin``: the keys' first 8 bytes (big-endian uint64) sorted, and
  the row each belongs to, so that a key finds its row by binary search, with no dict;
* ``offsets.bin`` and ``prompts.bin``: the rows' normalized prompts (UTF-8, concatenated);
* ``live.bin``: one byte per row, 0 for an entry removed before the snapshot was written;
* ``until.bin``: when each row's entry expires at the latest (unix seconds, 0: never), after
  which it is not proposed;
* ``meta.json``: the format, the vector length and the row count.

Everything but ``meta.json`` is read through ``numpy.memmap``: a process's private memory
holds none of it. Nothing is unpickled; sizes are checked against ``meta.json`` on opening.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import write_file
from ..arrays import (
    expiry_seconds,
    key_prefixes,
    keys_in,
    map_array,
    raw_keys,
    read_meta,
    sorted_prefixes,
    write_array,
)

FORMAT = 1


SEARCH_EXPANSION = 256
"""usearch's ``expansion_search``: a missed proposal is a paid call, and 256 costs a fraction
of a millisecond more than 64 (``benchmarks/bench_graph_recall.py``; figures in the README)."""


def new_graph(dim: int) -> Any:
    """The HNSW graph every scope uses: int8 vectors, cosine; it only proposes."""
    from usearch.index import Index

    return Index(ndim=dim, metric="cos", dtype="i8", connectivity=8, expansion_add=64,
                 expansion_search=SEARCH_EXPANSION)


@dataclass(frozen=True)
class Rows:
    """What a snapshot is written from: a base snapshot's rows (or none) followed by new ones,
    and the graph that holds them all, labelled by row."""

    base: MappedScope | None
    live_base: np.ndarray | None
    """The base rows still live (the base's own mask, less what was removed since)."""
    keys: Sequence[str]
    prompts: Sequence[str]
    until: Sequence[float]
    """When each new row's entry expires at the latest (0: never)."""
    graph: Any

    def __len__(self) -> int:
        return (self.base.rows if self.base else 0) + len(self.keys)


def write(directory: Path, dim: int, rows: Rows) -> None:
    """Write a snapshot into the empty ``directory`` (files private to their user), streaming
    the base's mapped rows: the writer holds in memory only the new rows and the key sort."""
    base = rows.base
    new_keys = raw_keys(rows.keys)
    new_prompts = [p.encode("utf-8", "surrogatepass") for p in rows.prompts]
    new_offsets = np.cumsum([0] + [len(p) for p in new_prompts], dtype=np.uint64)
    if base is not None and base.rows:
        new_offsets = new_offsets[1:] + base._offsets[-1]
        old_prefixes = key_prefixes(base.keys.keys)
    else:
        old_prefixes = np.zeros(0, dtype=np.uint64)
    prefixes, order = sorted_prefixes(np.concatenate([old_prefixes, key_prefixes(new_keys)]))
    live = np.concatenate([rows.live_base if rows.live_base is not None else np.zeros(0, np.uint8),
                           np.ones(len(rows.keys), np.uint8)]).astype(np.uint8)
    parts: dict[str, list[Any]] = {
        "keys.bin": [base.keys.keys if base else None, new_keys],
        "prefixes.bin": [prefixes], "order.bin": [order],
        "offsets.bin": [base._offsets if base else None, new_offsets],
        "prompts.bin": [base._prompts if base else None, b"".join(new_prompts)],
        "live.bin": [live],
        "until.bin": [base.until if base else None,
                      expiry_seconds(rows.until)],
    }
    for name, pieces in parts.items():
        write_array(directory / name, pieces)
    rows.graph.save(str(directory / "graph.usearch"))
    os.chmod(directory / "graph.usearch", 0o600)
    meta = {"format": FORMAT, "dim": dim, "rows": len(rows)}
    write_file(directory / "meta.json", json.dumps(meta).encode(), exclusive=True)


class MappedScope:
    """A snapshot opened read-only: rows ``[0, rows)`` of a scope."""

    def __init__(self, directory: Path) -> None:
        from usearch.index import Index

        self.directory = directory
        self.dim, self.rows = read_meta(directory, FORMAT, ("dim", "rows"))
        self.keys = keys_in(directory, self.rows)
        self._offsets = map_array(self.directory / "offsets.bin", np.uint64, (self.rows + 1,))
        self._prompts = map_array(self.directory / "prompts.bin", np.uint8, (int(self._offsets[-1]) if self.rows else 0,))
        self.live = map_array(self.directory / "live.bin", np.uint8, (self.rows,))
        self.until = map_array(self.directory / "until.bin", np.uint32, (self.rows,))
        """When each row's entry expires at the latest (unix seconds; 0: never)."""
        self.graph = Index.restore(str(directory / "graph.usearch"), view=True)
        if self.graph is not None:
            self.graph.expansion_search = SEARCH_EXPANSION  # a search setting: not saved with the graph
        if self.graph is None or self.graph.ndim != self.dim or len(self.graph) > self.rows:
            raise ValueError(f"{directory}: graph does not fit the snapshot")

    def key(self, row: int) -> str:
        return self.keys.key(row)

    def prompt(self, row: int) -> str:
        raw = bytes(self._prompts[int(self._offsets[row]):int(self._offsets[row + 1])])
        return raw.decode("utf-8", "surrogatepass")  # as written: a prompt may hold lone surrogates

    def live_rows(self, keys: Sequence[str]) -> np.ndarray:
        """Each key's live row, or -1 (a key removed and stored again has a dead row and a
        live one)."""
        return self.keys.find(keys, self.live)

    def live_row(self, key: str) -> int | None:
        row = int(self.live_rows([key])[0])
        return None if row < 0 else row
