"""In-process index of 64-bit perceptual hashes, searched by Hamming radius.

Hashes live in a uint64 array, one row per entry, in the order entries arrive; a removed
entry's row is masked out (never proposed again) and the rows are compacted once the dead
outnumber the live.

Search is multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in Hamming space
with multi-index hashing", 2012). The 64 bits are cut into four 16-bit substrings. If two
hashes are within distance ``r = 4 t + a`` (``a < 4``), their four substring distances add
up to at most ``r``, so (pigeonhole) one of the first ``a + 1`` substrings is within ``t`` or
one of the others within ``t - 1``. For each substring a table maps every 16-bit value to
the rows holding it (CSR: row ids sorted by value, plus 65,537 offsets), so a query looks up
the values near each of its substrings (52 lookups for r = 6, 188 for 8, 428 for 10, 1,108
for 12), gathers those rows and verifies each with a popcount of the XOR. At a million
random hashes a bucket holds ~15 rows: radius 10 verifies ~6,500 candidates instead of a
million rows (~0.2 ms against ~1 ms for a scan). When the tables would propose more than
1/32 of the rows (radius >= 14 at any size) a vectorized popcount scan of the whole array
is cheaper and is used instead.

The tables cover rows ``[0, sealed)``; newer rows (the tail) are scanned. When the tail grows
past :data:`TAIL_MAX_ROWS` (or 1/32 of the sealed rows) the adding thread rebuilds the tables
over all rows outside the lock (a radix argsort per substring: tens of ms at a million rows)
and installs them under it; searches meanwhile use the old tables and a longer tail.

Memory: 8 bytes (hash) + 4 x 4 bytes (row ids in the four tables) + 1 byte (mask) = 25 bytes
per entry, plus 2 MiB of offsets, plus the key string and its dict and list slots.

Skewed hashes (many blank images share a value) make some buckets long; the result stays
exact, only slower for queries that land in them. One lock guards everything; a search holds
it for its whole duration (well under a millisecond at a million rows for radius <= 11).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable

import numpy as np

HASH_BITS = 64
SUBSTRINGS = 4
SUB_BITS = HASH_BITS // SUBSTRINGS
SUB_VALUES = 1 << SUB_BITS
TAIL_MAX_ROWS = 1 << 16
"""Rows newer than the tables, scanned on every search, before the tables are rebuilt."""
COMPACT_MIN_DEAD = 1 << 12
MAX_CANDIDATE_SHARE = 32
"""The tables are used only if they would propose at most 1/32 of the rows: a proposed
candidate (a probe, two random gathers, a verify) costs tens of times a scanned row."""
_MASK64 = (1 << HASH_BITS) - 1

if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def popcount(values: np.ndarray) -> np.ndarray:
        """Set bits of each uint64, as uint8."""
        return np.bitwise_count(values)

else:  # pragma: no cover - numpy 1.x
    _BYTE_BITS = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)

    def popcount(values: np.ndarray) -> np.ndarray:
        """Set bits of each uint64, as uint8 (a byte lookup table)."""
        as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
        return _BYTE_BITS[as_bytes].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


_SUB_WEIGHT = popcount(np.arange(SUB_VALUES, dtype=np.uint64))
_PROBES = [np.flatnonzero(_SUB_WEIGHT <= t).astype(np.int64) for t in range(SUB_BITS + 1)]
"""``_PROBES[t]``: every 16-bit XOR mask of weight <= t (the values near a substring)."""
_SHIFTS = np.arange(SUBSTRINGS, dtype=np.uint64) * np.uint64(SUB_BITS)


def as_hash(value: object) -> int:
    """A 64-bit hash as a Python int in ``[0, 2**64)``.

    Accepts Python ints and numpy integers; a negative value in the int64 range (as SQLite
    stores a uint64) is taken modulo 2**64.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("a hash is an integer, not a bool")
    number = operator.index(value)  # type: ignore[arg-type]
    if not -(1 << (HASH_BITS - 1)) <= number <= _MASK64:
        raise ValueError(f"hash {number} does not fit in 64 bits")
    return number & _MASK64


class Tables:
    """The four CSR tables over rows ``[0, rows)``: ``order`` holds each substring's row ids
    sorted by its value, one block of ``rows`` per substring; ``offsets[j, v]`` is where the
    rows with value ``v`` of substring ``j`` start in ``order`` (block base included)."""

    __slots__ = ("offsets", "order", "rows")

    def __init__(self, order: np.ndarray, offsets: np.ndarray, rows: int) -> None:
        self.order = order
        self.offsets = offsets
        self.rows = rows

    @classmethod
    def build(cls, hashes: np.ndarray) -> Tables:
        rows = len(hashes)
        order = np.empty(SUBSTRINGS * rows, dtype=np.uint32)
        offsets = np.empty((SUBSTRINGS, SUB_VALUES + 1), dtype=np.int64)
        for j in range(SUBSTRINGS):
            sub = ((hashes >> _SHIFTS[j]) & np.uint64(SUB_VALUES - 1)).astype(np.uint16)
            order[j * rows:(j + 1) * rows] = np.argsort(sub, kind="stable")  # radix sort
            offsets[j, 0] = j * rows
            np.cumsum(np.bincount(sub, minlength=SUB_VALUES), out=offsets[j, 1:])
            offsets[j, 1:] += j * rows
        return cls(order, offsets, rows)

    def usable(self, radius: int) -> bool:
        """Whether a search of ``radius`` is cheaper through the tables than by a scan."""
        return radius < HASH_BITS and expected_candidates(radius, self.rows) * MAX_CANDIDATE_SHARE <= self.rows

    def candidates(self, query: int, radius: int) -> np.ndarray:
        """Row ids (with repeats) that agree with ``query`` closely enough on some substring
        (:func:`substring_radii`): a superset of the rows within ``radius``."""
        subs = ((np.uint64(query) >> _SHIFTS) & np.uint64(SUB_VALUES - 1)).astype(np.int64)
        probes = np.concatenate([(int(sub) ^ _PROBES[near]) + j * (SUB_VALUES + 1)
                                 for j, (sub, near) in enumerate(zip(subs, substring_radii(radius)))
                                 if near >= 0])
        flat = self.offsets.ravel()
        starts = flat[probes]
        lengths = flat[probes + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.uint32)
        # Concatenate the ranges order[start:start+length] without a Python loop.
        ends = np.cumsum(lengths)
        positions = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
        return self.order[positions]


def within(hashes: np.ndarray, rows: np.ndarray, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``rows`` (a table's candidates, with repeats) whose hash is within
    ``radius`` of ``query``, and their distances."""
    distances = popcount(np.asarray(hashes[rows]) ^ np.uint64(query))
    keep = distances <= radius
    rows, first = np.unique(rows[keep], return_index=True)  # a row may match on 2+ substrings: few do
    return rows.astype(np.int64), distances[keep][first]


def scan(hashes: np.ndarray, start: int, stop: int, query: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` whose hash is within ``radius`` of ``query``, and their distances."""
    distances = popcount(np.asarray(hashes[start:stop]) ^ np.uint64(query))
    rows = np.flatnonzero(distances <= radius)
    return rows + start, distances[rows]


def substring_radii(radius: int) -> list[int]:
    """How far each substring is searched for a query ``radius`` (Norouzi et al.'s split):
    with ``radius = 4 t + a`` (``a < 4``), the first ``a + 1`` substrings are searched within
    ``t`` and the others within ``t - 1``. If every substring missed, the distance would be at
    least ``(a + 1)(t + 1) + (3 - a) t = radius + 1``."""
    t, a = divmod(radius, SUBSTRINGS)
    return [t if j <= a else t - 1 for j in range(SUBSTRINGS)]


def expected_candidates(radius: int, rows: int) -> float:
    """Candidates a table search proposes for random (uniform) hashes."""
    probes = sum(len(_PROBES[near]) for near in substring_radii(radius) if near >= 0)
    return probes * rows / SUB_VALUES


class HammingIndex:
    """64-bit hashes with a string key each, searched for all entries within a Hamming radius.

    A key holds one hash: adding a key again with another hash replaces it; two keys may
    share a hash.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._live = np.zeros(1024, dtype=bool)
        self._keys: list[str | None] = []  # by row; None once removed
        self._rows: dict[str, int] = {}
        self._tables: Tables | None = None
        self._generation = 0  # bumped by a compaction: tables built before it are stale
        self._building = False

    def __len__(self) -> int:
        return len(self._rows)

    def has(self, key: str) -> bool:
        return key in self._rows

    def add(self, key: str, fingerprint: int | np.integer) -> None:
        self.add_many([(key, fingerprint)])

    def add_many(self, items: Iterable[tuple[str, int | np.integer]]) -> None:
        """Add ``(key, hash)`` pairs under one hold of the lock."""
        checked = [(key, as_hash(value)) for key, value in items]
        for key, _ in checked:
            if not isinstance(key, str):
                raise TypeError(f"a key is a str, not {type(key).__name__}")
        with self._lock:
            first = len(self._keys)
            values: list[int] = []
            for key, value in checked:
                row = self._rows.get(key)
                if row is not None:
                    stored = values[row - first] if row >= first else int(self._hashes[row])
                    if stored == value:
                        continue
                    self._drop(row)
                self._rows[key] = len(self._keys)
                self._keys.append(key)
                values.append(value)
            self._reserve(len(self._keys))
            self._hashes[first:len(self._keys)] = np.array(values, dtype=np.uint64)
            self._live[first:len(self._keys)] = True
            build = self._start_build()
        if build is not None:
            self._build(*build)

    def remove(self, key: str) -> bool:
        """Forget ``key``; False if it was not there."""
        with self._lock:
            row = self._rows.pop(key, None)
            if row is None:
                return False
            self._drop(row)
            dead = len(self._keys) - len(self._rows)
            if dead < COMPACT_MIN_DEAD or dead <= len(self._rows):
                return True
            self._compact()
            build = self._start_build()
        if build is not None:
            self._build(*build)
        return True

    def search(self, fingerprint: int | np.integer, radius: int) -> list[tuple[str, int]]:
        """Every live entry within ``radius`` bits of ``fingerprint``, as ``(key, distance)``,
        nearest first (ties in the order entries arrived)."""
        query = as_hash(fingerprint)
        radius = operator.index(radius)
        if radius < 0:
            raise ValueError("radius must be >= 0")
        with self._lock:
            used = len(self._keys)
            tables = self._tables
            parts: list[tuple[np.ndarray, np.ndarray]] = []
            scan_from = 0
            if tables is not None and tables.usable(radius):
                parts.append(within(self._hashes, tables.candidates(query, radius), query, radius))
                scan_from = tables.rows
            if scan_from < used:
                parts.append(scan(self._hashes, scan_from, used, query, radius))
            if not parts:
                return []
            rows = np.concatenate([p[0] for p in parts])
            distances = np.concatenate([p[1] for p in parts])
            live = self._live[rows]
            rows, distances = rows[live], distances[live]
            ranked = np.argsort(distances, kind="stable")
            keys = self._keys
            return [(keys[row], distance)  # type: ignore[misc]
                    for row, distance in zip(rows[ranked].tolist(), distances[ranked].tolist())]

    def items(self) -> list[tuple[str, int]]:
        """Every live entry as ``(key, hash)``, in the order they arrived."""
        with self._lock:
            rows = np.flatnonzero(self._live[:len(self._keys)])
            keys = self._keys
            return list(zip([keys[row] for row in rows.tolist()], self._hashes[rows].tolist()))  # type: ignore[misc]

    @property
    def nbytes(self) -> int:
        """Memory held in numpy arrays (hashes, mask, tables), beyond the Python keys."""
        tables = self._tables
        extra = 0 if tables is None else tables.order.nbytes + tables.offsets.nbytes
        return self._hashes.nbytes + self._live.nbytes + extra

    def wait_for_tables(self) -> None:
        """Rebuild the tables now if any rows are outside them: for tests and benchmarks."""
        with self._lock:
            build = self._start_build(force=True)
        if build is not None:
            self._build(*build)

    # -- internals (called with the lock held, except _build) ---------------------------------

    def _drop(self, row: int) -> None:
        self._live[row] = False
        self._keys[row] = None

    def _reserve(self, rows: int) -> None:
        if rows > len(self._hashes):
            grown = max(rows, len(self._hashes) + len(self._hashes) // 2)
            hashes = np.zeros(grown, dtype=np.uint64)
            hashes[:len(self._hashes)] = self._hashes
            live = np.zeros(grown, dtype=bool)
            live[:len(self._live)] = self._live
            # New arrays, not resized ones: a rebuild outside the lock may hold a view of the old.
            self._hashes, self._live = hashes, live

    def _start_build(self, force: bool = False) -> tuple[np.ndarray, int] | None:
        """``(hashes, generation)`` to build tables over, if due and no build is running."""
        used = len(self._keys)
        sealed = 0 if self._tables is None else self._tables.rows
        due = used > sealed if force else used - sealed > max(TAIL_MAX_ROWS, sealed // 32)
        if not due or self._building:
            return None
        self._building = True
        return self._hashes[:used], self._generation

    def _build(self, hashes: np.ndarray, generation: int) -> None:
        """Build tables over a snapshot of rows, outside the lock (rows never change once
        written; growth replaces the array), and install them unless a compaction renumbered
        the rows meanwhile."""
        try:
            tables = Tables.build(hashes)
        except BaseException:
            with self._lock:
                self._building = False
            raise
        with self._lock:
            self._building = False
            if generation == self._generation and (
                    self._tables is None or tables.rows > self._tables.rows):
                self._tables = tables

    def _compact(self) -> None:
        """Drop dead rows and renumber; the tables go and are rebuilt by the next add."""
        alive = np.flatnonzero(self._live[:len(self._keys)])
        hashes = self._hashes[alive]
        self._keys = [self._keys[row] for row in alive.tolist()]
        self._rows = {key: row for row, key in enumerate(self._keys)}  # type: ignore[misc]
        self._hashes = np.zeros(max(1024, len(alive)), dtype=np.uint64)
        self._hashes[:len(alive)] = hashes
        self._live = np.zeros(len(self._hashes), dtype=bool)
        self._live[:len(alive)] = True
        self._tables = None
        self._generation += 1
