"""A snapshot's flat arrays on disk: written private to their user, mapped read-only (no
process holds them in its private memory; nothing is unpickled), and an entry's row found by
its key, with no dict.

A snapshot stores each row's key as 32 raw bytes (``keys.bin``, in row order), the keys'
first 8 bytes as big-endian uint64 sorted (``prefixes.bin``) and the row each belongs to
(``order.bin``): a key finds its row by binary search over pages every process of the host
shares, where a dict would cost each process about 150 bytes per entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

KEY_BYTES = 32
MAX_SHARED_PREFIX = 16
"""Keys sharing their first 8 bytes that a snapshot may hold (sha256 keys: one pair in about
300,000 snapshots of 10 million); more would make a lookup scan them one by one."""
_CHECK_ROWS = 1 << 20


def write_array(path: Path, pieces: Sequence[np.ndarray | bytes | None]) -> None:
    """A new file (private to its user) holding ``pieces`` one after the other."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for piece in pieces:
            if piece is not None:
                out.write(piece if isinstance(piece, bytes) else np.ascontiguousarray(piece).tobytes())


def map_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The file mapped read-only as an array of ``shape``; ValueError if its size differs.
    A plain ndarray over the mapping (numpy.memmap's own indexing costs microseconds a call)."""
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path}: {size} bytes, expected {expected}")
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=shape))


def read_meta(directory: Path, version: int, counts: Sequence[str]) -> list[int]:
    """The ``counts`` a snapshot's ``meta.json`` gives (non-negative ints); ValueError unless
    it is a snapshot of format ``version``."""
    meta = json.loads((directory / "meta.json").read_bytes())
    found = [meta.get(name) for name in counts] if isinstance(meta, dict) else []
    if (not isinstance(meta, dict) or meta.get("format") != version
            or not all(type(value) is int and value >= 0 for value in found)):
        raise ValueError(f"{directory}: not a snapshot this version reads")
    return found


def keys_in(directory: Path, rows: int) -> KeyRows:
    """A snapshot's key files, mapped and checked."""
    return KeyRows(map_array(directory / "keys.bin", np.uint8, (rows, KEY_BYTES)),
                   map_array(directory / "prefixes.bin", np.uint64, (rows,)),
                   map_array(directory / "order.bin", np.uint32, (rows,)))


def expiry_seconds(until: Sequence[float] | np.ndarray) -> np.ndarray:
    """Expiry times (unix seconds, 0: never) as a snapshot stores them: uint32, rounded up."""
    return np.minimum(np.ceil(np.asarray(until, dtype=np.float64)), 2**32 - 1).astype(np.uint32)


def raw_keys(keys: Sequence[str]) -> np.ndarray:
    """Hex keys as rows of :data:`KEY_BYTES` bytes."""
    return np.frombuffer(b"".join(bytes.fromhex(k) for k in keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)


def key_prefixes(raw: np.ndarray) -> np.ndarray:
    """Each key's first 8 bytes as a big-endian uint64: sorting them sorts the keys' starts."""
    return np.ascontiguousarray(raw[:, :8]).view(">u8").ravel().astype(np.uint64)


def sorted_prefixes(prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``prefixes.bin`` and ``order.bin`` hold for rows with these prefixes."""
    order = np.argsort(prefixes, kind="stable").astype(np.uint32)
    return prefixes[order], order


class KeyRows:
    """The key files of a snapshot, mapped, and checked: a file that passed its digest was
    still written by whoever could write to the store, and a lookup must neither read past a
    file nor take time the files choose."""

    def __init__(self, keys: np.ndarray, prefixes: np.ndarray, order: np.ndarray) -> None:
        self.keys = keys
        self._prefixes = prefixes
        self._order = order
        self._check()

    def _check(self) -> None:
        """ValueError unless ``order`` is a permutation of the rows and ``prefixes`` are the
        rows' key prefixes in that order, sorted, with runs of at most
        :data:`MAX_SHARED_PREFIX` (one pass, a million rows at a time)."""
        rows = len(self.keys)
        if len(self._order) != rows or len(self._prefixes) != rows:
            raise ValueError("key files of different lengths")
        seen = np.zeros(rows, dtype=bool)
        for start in range(0, rows, _CHECK_ROWS):
            order = np.asarray(self._order[start:start + _CHECK_ROWS]).astype(np.int64)
            if len(order) and int(order.max()) >= rows:
                raise ValueError("a key row past the snapshot")
            seen[order] = True
            prefixes = np.asarray(self._prefixes[max(0, start - 1):start + _CHECK_ROWS])
            if np.any(prefixes[1:] < prefixes[:-1]):
                raise ValueError("key prefixes out of order")
            if not np.array_equal(key_prefixes(np.asarray(self.keys[order])), prefixes[-len(order):]):
                raise ValueError("key prefixes that are not the keys'")
        if not seen.all():
            raise ValueError("key rows that are not a permutation")
        if rows > MAX_SHARED_PREFIX:
            prefixes = np.asarray(self._prefixes)
            if np.any(prefixes[MAX_SHARED_PREFIX:] == prefixes[:-MAX_SHARED_PREFIX]):
                raise ValueError(f"more than {MAX_SHARED_PREFIX} keys share a prefix")

    def key(self, row: int) -> str:
        return bytes(self.keys[row]).hex()

    def find(self, keys: Sequence[str], live: np.ndarray | None = None,
             within: tuple[int, int] | None = None) -> np.ndarray:
        """Each key's row, or -1: its live row, given a ``live`` mask (a key removed and
        stored again may have a dead row and a live one); its row in ``[start, end)``, given
        ``within`` (a key may have a row in each of two scopes)."""
        found = np.full(len(keys), -1, dtype=np.int64)
        if not keys or not len(self._prefixes):
            return found
        raw = raw_keys(keys)
        prefixes = key_prefixes(raw)
        start = np.searchsorted(self._prefixes, prefixes, side="left")
        end = np.searchsorted(self._prefixes, prefixes, side="right")

        def usable(rows: np.ndarray) -> np.ndarray:
            ok = np.ones(len(rows), dtype=bool)
            if live is not None:
                ok &= np.asarray(live[rows]) != 0
            if within is not None:
                ok &= (rows >= within[0]) & (rows < within[1])
            return ok

        single = np.flatnonzero(end - start == 1)
        rows = self._order[start[single]].astype(np.int64)
        same = np.all(np.asarray(self.keys[rows]) == raw[single], axis=1) & usable(rows)
        found[single[same]] = rows[same]
        for at in np.flatnonzero(end - start > 1).tolist():  # a shared prefix: compare whole keys
            run = self._order[int(start[at]):int(end[at])].astype(np.int64)
            match = np.flatnonzero(np.all(np.asarray(self.keys[run]) == raw[at], axis=1) & usable(run))
            if len(match):
                found[at] = run[match[0]]
        return found
