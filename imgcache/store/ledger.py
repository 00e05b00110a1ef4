"""Spending ledgers kept in a tier: what the calls of one budget window have spent and hold,
shared by every process that uses the tier (see :mod:`imgcache.spend` for the policy). The
``owner`` of a ledger is a namespace, or ``_shared`` for one budget over every namespace.

Amounts are whole micro-dollars. A call *reserves* its estimated price before it goes upstream:
granted only if what is spent, plus what calls in flight hold, plus this amount stays within
the limit, so two workers never both take the last dollar. The call then *settles* its hold
with the real cost (0 when the API refused it). A hold has a lifetime: a process that dies
mid-call never settles, and when its hold lapses the amount moves to *spent* (the call may
have been billed), never back to free. Every step is idempotent, so a step sent twice (a
client's retry after a timeout) changes nothing the second time: a reserve of a hold already
taken is granted as it stands, a settle of a hold no longer held (settled, or lapsed) does
nothing. The first step that takes spent plus held to the warning level reports it
(``crossed``), once a window.

* :class:`RedisLedger` (every worker sharing a Redis, Cluster included): one hash per budget
  window, ``<prefix><owner>:budget:<window>`` with fields ``spent``, ``warned`` and
  ``h:<id>`` = ``<micro>:<lapses at, ms>``, changed by one Lua script on the server's clock.
* :class:`FileLedger` (processes on one machine sharing a directory): a JSON file per window,
  ``<root>/<owner>/budget/<window>.json``, read and replaced under an exclusive ``flock``.
* :class:`MemoryLedger`: one process's, the fallback while a shared ledger is unreachable.

The three run the same arithmetic (:func:`reserve`, :func:`settle`, over a :class:`Book`).
Ledgers raise TierError like any tier call; a ledger file that does not parse is taken as
spent to its limit (nothing more is spent in that window) and rewritten, logged; a Redis key
of another type is removed and reported.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._files import DEFAULT_FILE_MODE, flocked, read_file, write_file
from ..errors import TierUnavailable
from .base import Breakered

if TYPE_CHECKING:
    from .redis import RedisTier

log = logging.getLogger("imgcache")


@dataclass(frozen=True)
class Ledgered:
    """A ledger's answer: whether a reservation was granted, the window's spent and held
    micro-dollars after the step, and whether this step first reached the warning level."""

    granted: bool
    spent: int
    held: int
    crossed: bool = False


class TierLedger(Protocol):
    """What a tier's ``ledger(owner)`` returns. ``window`` names a budget window
    ("2026-12-05"); ``keep_ms`` is how long its record outlives the last step (0: for ever)."""

    def reserve(self, window: str, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int,
                keep_ms: int) -> Ledgered: ...

    def settle(self, window: str, hold_id: str, actual: int, limit: int, warn: int, keep_ms: int) -> Ledgered: ...

    def read(self, window: str, limit: int) -> Ledgered: ...


# -- the arithmetic --------------------------------------------------------------------------


@dataclass
class Book:
    """One window's record: spent, whether the warning was given, holds (id -> micro, lapse ms)."""

    spent: int = 0
    warned: bool = False
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def lapse(self, now_ms: int) -> None:
        """Holds whose holder went quiet are spent: the call may have been billed."""
        for hold_id, (micro, lapses) in list(self.holds.items()):
            if lapses <= now_ms:
                del self.holds[hold_id]
                self.spent += micro

    @property
    def held(self) -> int:
        return sum(micro for micro, _ in self.holds.values())

    def _warn(self, warn: int) -> bool:
        if self.warned or warn < 0 or self.spent + self.held < warn:
            return False
        self.warned = True
        return True


def reserve(book: Book, now_ms: int, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int) -> Ledgered:
    book.lapse(now_ms)
    if hold_id in book.holds:  # sent twice: the hold stands
        return Ledgered(True, book.spent, book.held)
    if book.spent + book.held + micro > limit:
        return Ledgered(False, book.spent, book.held)
    book.holds[hold_id] = (micro, now_ms + hold_ms)
    return Ledgered(True, book.spent, book.held, book._warn(warn))


def settle(book: Book, now_ms: int, hold_id: str, actual: int, warn: int) -> Ledgered:
    book.lapse(now_ms)
    if book.holds.pop(hold_id, None) is not None:  # else settled already, or lapsed into spent
        book.spent += actual
    return Ledgered(True, book.spent, book.held, book._warn(warn))


# -- in one process --------------------------------------------------------------------------


class MemoryLedger:
    """One process's books (no sharing): the fallback, and the budget of a cache with no
    tier that keeps ledgers."""

    def __init__(self, clock: Any = None) -> None:
        self._clock = clock or time.time
        self._books: dict[str, Book] = {}
        self._lock = threading.Lock()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def reserve(self, window: str, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int,
                keep_ms: int) -> Ledgered:
        with self._lock:
            return reserve(self._books.setdefault(window, Book()), self._now_ms(), hold_id, micro, limit, warn,
                           hold_ms)

    def settle(self, window: str, hold_id: str, actual: int, limit: int, warn: int, keep_ms: int) -> Ledgered:
        with self._lock:
            return settle(self._books.setdefault(window, Book()), self._now_ms(), hold_id, actual, warn)

    def read(self, window: str, limit: int) -> Ledgered:
        with self._lock:
            book = self._books.get(window) or Book()
            book.lapse(self._now_ms())
            return Ledgered(True, book.spent, book.held)

    def peek(self, window: str) -> int:
        """Spent and held in ``window`` (lapsed holds not yet moved: no clock read)."""
        with self._lock:
            book = self._books.get(window)
            return 0 if book is None else book.spent + book.held

    def seed(self, window: str, spent: int) -> None:
        """Count at least ``spent`` in ``window``: what the shared ledger said last, this
        process's own spending included."""
        with self._lock:
            book = self._books.setdefault(window, Book())
            book.spent = max(book.spent, spent)


# -- in a directory --------------------------------------------------------------------------


class FileLedger:
    """Books as JSON files under a local directory, one process at a time (``flock``)."""

    def __init__(self, root: Path, owner: str, *, file_mode: int = DEFAULT_FILE_MODE, clock: Any = None) -> None:
        self.base = Path(root) / owner / "budget"
        self.file_mode = file_mode
        self._clock = clock or time.time

    def _step(self, window: str, limit: int, change: Any) -> Ledgered:
        path = self.base / f"{window}.json"
        try:
            with flocked(self.base / f".{window}.lock", self.file_mode):
                book = self._load(path, limit)
                answer: Ledgered = change(book, int(self._clock() * 1000))
                data = {"spent": book.spent, "warned": book.warned, "holds": book.holds}
                write_file(path, json.dumps(data, separators=(",", ":")).encode(), self.file_mode)
                return answer
        except OSError as exc:
            raise TierUnavailable("disk", f"budget ledger {path}: {exc}") from exc

    @staticmethod
    def _load(path: Path, limit: int) -> Book:
        raw = read_file(path)
        if raw is None:
            return Book()
        try:
            data = json.loads(raw)
            holds = {str(k): (int(v[0]), int(v[1])) for k, v in data["holds"].items()}
            return Book(int(data["spent"]), bool(data["warned"]), holds)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.error("imgcache: budget ledger %s does not parse (%r); taken as spent to its limit", path, exc)
            return Book(spent=max(limit, 0), warned=True)

    def reserve(self, window: str, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int,
                keep_ms: int) -> Ledgered:
        return self._step(window, limit, lambda book, now: reserve(book, now, hold_id, micro, limit, warn, hold_ms))

    def settle(self, window: str, hold_id: str, actual: int, limit: int, warn: int, keep_ms: int) -> Ledgered:
        return self._step(window, limit, lambda book, now: settle(book, now, hold_id, actual, warn))

    def read(self, window: str, limit: int) -> Ledgered:
        def look(book: Book, now: int) -> Ledgered:
            book.lapse(now)
            return Ledgered(True, book.spent, book.held)

        return self._step(window, limit, look)


# -- in Redis --------------------------------------------------------------------------------

# reserve(), settle() and a read over one hash, on the server's clock. ARGV: mode, hold id,
# micro (the hold's), limit, warn, hold ms, keep ms (0: for ever), actual. Amounts stay below
# 2^53 (imgcache.spend caps them), so Lua's doubles and '%d' hold them exactly.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, mode, id = KEYS[1], ARGV[1], 'h:' .. ARGV[2]
local micro, limit, warn = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local hold_ms, keep_ms, actual = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local spent, held, warned, mine, lapsed = 0, 0, false, nil, false
local all = redis.call('HGETALL', key)
for i = 1, #all, 2 do
  local name, value = all[i], all[i + 1]
  if name == 'spent' then spent = spent + (tonumber(value) or 0)
  elseif name == 'warned' then warned = true
  elseif string.sub(name, 1, 2) == 'h:' then
    local amount, lapses = string.match(value, '^(%d+):(%d+)$')
    amount, lapses = tonumber(amount) or 0, tonumber(lapses) or 0
    if lapses <= now then
      redis.call('HDEL', key, name)
      spent, lapsed = spent + amount, true
    elseif name == id then mine = amount
    else held = held + amount end
  end
end
local granted, crossed = 1, 0
if mode == 'reserve' then
  if mine then
    held = held + mine  -- sent twice: the hold stands
  elseif spent + held + micro > limit then
    granted = 0
  else
    redis.call('HSET', key, id, string.format('%d:%d', micro, now + hold_ms))
    held = held + micro
  end
elseif mode == 'settle' then
  if mine then  -- else settled already, or lapsed into spent
    redis.call('HDEL', key, id)
    spent = spent + actual
  end
elseif mine then
  held = held + mine
end
if mode ~= 'read' or lapsed then
  redis.call('HSET', key, 'spent', string.format('%d', spent))
  if granted == 1 and not warned and warn >= 0 and spent + held >= warn then
    redis.call('HSET', key, 'warned', '1')
    crossed = 1
  end
  if keep_ms > 0 then redis.call('PEXPIRE', key, keep_ms) else redis.call('PERSIST', key) end
end
return {granted, string.format('%d', spent), string.format('%d', held), crossed}
"""


class RedisLedger:
    """Books in Redis, shared by every worker; see the module doc."""

    def __init__(self, tier: RedisTier, owner: str) -> None:
        self.tier = tier
        self._base = f"{tier.prefix}{owner}:budget:"
        self._script: Any = None

    def _run(self, window: str, *args: Any) -> Ledgered:
        with self.tier.translate_errors():
            if self._script is None:
                self._script = self.tier.client.register_script(_SCRIPT)
        key = self._base + window
        # a ledger key someone overwrote with another type is removed, not failed on for ever
        granted, spent, held, crossed = self.tier.repairing(key, "hash", lambda: self._script(keys=[key], args=args))
        return Ledgered(bool(int(granted)), int(spent), int(held), bool(int(crossed)))

    def reserve(self, window: str, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int,
                keep_ms: int) -> Ledgered:
        return self._run(window, "reserve", hold_id, micro, limit, warn, hold_ms, keep_ms, 0)

    def settle(self, window: str, hold_id: str, actual: int, limit: int, warn: int, keep_ms: int) -> Ledgered:
        return self._run(window, "settle", hold_id, 0, limit, warn, 0, keep_ms, actual)

    def read(self, window: str, limit: int) -> Ledgered:
        return self._run(window, "read", "", 0, limit, -1, 0, 0, 0)


class GuardedLedger(Breakered):
    """A tier's ledger behind that tier's breaker (see :class:`~imgcache.store.base.Breakered`):
    the budget's own books take over while it is down."""

    def __init__(self, ledger: TierLedger, tier_name: str, guard: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__(tier_name, guard, "budget ledger unavailable")
        self._ledger = ledger

    def reserve(self, window: str, hold_id: str, micro: int, limit: int, warn: int, hold_ms: int,
                keep_ms: int) -> Ledgered:
        return self._guarded(lambda: self._ledger.reserve(window, hold_id, micro, limit, warn, hold_ms, keep_ms))

    def settle(self, window: str, hold_id: str, actual: int, limit: int, warn: int, keep_ms: int) -> Ledgered:
        return self._guarded(lambda: self._ledger.settle(window, hold_id, actual, limit, warn, keep_ms))

    def read(self, window: str, limit: int) -> Ledgered:
        return self._guarded(lambda: self._ledger.read(window, limit))
