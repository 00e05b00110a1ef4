"""The storage protocol every tier implements.

A tier stores bytes under string keys and holds no policy: TTL arithmetic, namespacing,
digest checks, promotion and fault handling live in :mod:`imgcache.store.tiered`.

Keys are *logical* keys built by :func:`entry_key` and :func:`blob_key`,
``"<namespace>/<kind>/<id>"``; each tier maps them onto its own naming (a Redis key with a
hash tag, an S3 object key, a file path). A miss is :data:`MISSING`, never ``None``.
Tiers raise :class:`~imgcache.errors.TierError` subclasses and nothing else.

Bad data at one key (a value of another type, a counter that is not a number, a directory
where a file should be) costs that key, never the tier: a tier removes or resets it where it
can and reports it through :meth:`BaseTier.report_corrupt`, or raises
:class:`~imgcache.errors.CorruptData`, which the tiered store counts without tripping the
tier's breaker.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from .._vocabulary import HEX_ID, Sentinel
from ..errors import CorruptData, TierUnavailable

if TYPE_CHECKING:
    from .claims import TierClaims
    from .ledger import TierLedger
    from .rate import SharedBuckets

log = logging.getLogger("imgcache")


_Missing = Sentinel
MISSING: Final = Sentinel("MISSING")
"""What ``Tier.get`` returns for a key it does not hold."""
FAILED: Final = Sentinel("FAILED")
"""What the tiered store's guarded calls return when the tier was skipped or failed."""


class Breakered:
    """A tier's helper object (shared buckets, a ledger) behind that tier's breaker, as the
    tiered store hands it out: a failing call trips and counts like any tier call, and while
    the tier is down every call raises TierUnavailable at once instead of waiting out a
    timeout, so the caller's own fallback takes over without delay."""

    def __init__(self, tier_name: str, guard: Callable[[Callable[[], Any]], Any], unavailable: str) -> None:
        self._tier_name = tier_name
        self._guard = guard
        self._unavailable = unavailable

    def _guarded(self, op: Callable[[], Any]) -> Any:
        result = self._guard(op)
        if result is FAILED:
            raise TierUnavailable(self._tier_name, self._unavailable)
        return result

ENTRY: Final = "e"
BLOB: Final = "b"
SCOPES: Final = {"process": 0, "host": 1, "fleet": 2}
"""Who sees what a tier stores: this process, the processes of one machine, every machine."""


def entry_key(namespace: str, key_hex: str) -> str:
    return f"{namespace}/{ENTRY}/{key_hex}"


def blob_key(namespace: str, digest: str) -> str:
    return f"{namespace}/{BLOB}/{digest}"


def split_key(key: str) -> tuple[str, str, str]:
    """``"ns/e/<hex>"`` -> ``("ns", "e", "<hex>")``, refusing anything that is not a logical key."""
    namespace, kind, ident = key.split("/", 2)
    if kind not in (ENTRY, BLOB) or not HEX_ID.fullmatch(ident):
        raise ValueError(f"not a logical cache key: {key!r}")
    return namespace, kind, ident


_REPORTED: OrderedDict[str, None] = OrderedDict()
_REPORTED_MAX = 4096
_reported_lock = threading.Lock()


def log_corrupt(exc: CorruptData) -> None:
    """Log bad data at WARNING the first time it is seen (its message names the key), at
    DEBUG after: a bad key read on every call must not flood the log."""
    message = str(exc)
    with _reported_lock:
        first = message not in _REPORTED
        if first:
            _REPORTED[message] = None
            if len(_REPORTED) > _REPORTED_MAX:
                _REPORTED.popitem(last=False)
    log.log(logging.WARNING if first else logging.DEBUG, "imgcache: %s", message)


@runtime_checkable
class Tier(Protocol):
    """A storage tier: bytes in, bytes out."""

    name: str
    """One of ``memory``, ``disk``, ``redis``, ``s3``: the label in stats and logs."""
    scope: str
    """Who sees what it stores: one of :data:`SCOPES`."""
    corrupt_sink: Callable[[CorruptData], None] | None
    """Told of bad data the tier found at one key and repaired itself; set by the tiered
    store, which counts it."""

    def get(self, key: str) -> bytes | _Missing: ...

    def get_many(self, keys: Iterable[str]) -> list[bytes | _Missing]: ...

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def delete(self, key: str) -> None: ...

    def ping(self) -> None:
        """Raise a TierError unless the tier answers; used to close a tripped breaker."""

    def close(self) -> None: ...


# -- capabilities a tier may declare beside get/set/delete ------------------------------------
# The tiered store uses, for each, the tier that reaches widest among the tiers that are up
# and offer it (a fleet's Redis before a machine's directory); nobody asks for a tier by name.
# Errors are TierError (or CorruptData for one bad key), as for the narrow protocol.


@runtime_checkable
class SharedCounters(Protocol):
    """Stats counters added up across processes, and a scan of the namespaces that have some."""

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None: ...

    def read_counters(self, namespace: str) -> dict[str, float]: ...

    def counter_namespaces(self, limit: int) -> set[str]:
        """Namespaces with counters; stops once it has found more than ``limit``."""


@runtime_checkable
class SharedFeeds(Protocol):
    """Records shared between processes: tailed feeds (read on from a cursor), short lists of
    the newest records, and bounded logs (read whole; the oldest records are dropped)."""

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None: ...

    def read_records(self, namespace: str, feed: str, cursor: str | None, limit: int = 10_000
                     ) -> tuple[list[bytes], str | None]: ...

    def trim_records(self, namespace: str, feed: str, below: str) -> None:
        """Drop the records before cursor ``below``, where the tier can (positions stay valid)."""

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None: ...

    def read_recent(self, namespace: str, feed: str) -> list[bytes]: ...

    def append_log(self, namespace: str, log: str, record: bytes, *, max_records: int,
                   max_bytes: int) -> None: ...

    def read_log(self, namespace: str, log: str) -> list[bytes]: ...


@runtime_checkable
class Mutexes(Protocol):
    """Locks that other processes respect, with a timeout so a dead holder frees them."""

    def try_mutex(self, key: str, timeout: float) -> Any:
        """The lock on entry ``key`` if it was free (then taken), else None. The lock has
        ``extend(seconds)`` and ``release()``, which may raise when it expired."""


@runtime_checkable
class BlobUrls(Protocol):
    """URLs that serve a blob's bytes directly (presigned S3, a local file)."""

    def blob_url(self, key: str, data: bytes, lifetime: int) -> str | None:
        """A URL for blob ``key`` (holding ``data``, stored first if absent) that works for
        ``lifetime`` seconds; None if this tier cannot give one now."""


@runtime_checkable
class Secrets(Protocol):
    """A secret every process sharing the tier agrees on: the first one stored wins."""

    def keep_secret(self, name: str, fresh: bytes) -> bytes: ...


@runtime_checkable
class Leases(Protocol):
    """Claims on keys that other processes respect and that die with their holder (a lease
    that lapses, a lock the kernel drops), and refusals remembered for a while: which worker
    does what (the prewarm job). See :mod:`imgcache.store.claims`."""

    def claims(self, namespace: str, scope: str, *, lease: float, refusal_ttl: float) -> TierClaims:
        """Claims of ``namespace`` for ``scope`` (what they are for, a part of their names),
        held ``lease`` seconds at a time while renewed; refusals are kept ``refusal_ttl``."""


@runtime_checkable
class RateBuckets(Protocol):
    """Token buckets every process sharing the tier draws from, on one clock. See
    :mod:`imgcache.store.rate`."""

    def rate_buckets(self, namespace: str, scope: str) -> SharedBuckets:
        """The buckets of ``namespace`` for ``scope`` (what they are for, a part of their names)."""


@runtime_checkable
class Ledgers(Protocol):
    """Spending ledgers every process sharing the tier draws on. See :mod:`imgcache.store.ledger`."""

    def ledger(self, owner: str) -> TierLedger:
        """The ledger of ``owner`` (a namespace, or ``_shared``)."""


@runtime_checkable
class Scannable(Protocol):
    """Every entry and blob file held, for prune (see :mod:`imgcache.store.prune`)."""

    def stored_files(self) -> Iterator[StoredFile]: ...

    def read_stored(self, file: StoredFile) -> bytes | None:
        """The file's bytes; None if it went meanwhile."""

    def remove_stored(self, file: StoredFile) -> None: ...


@dataclass
class StoredFile:
    """One file in an entry or blob directory, as a scan sees it."""

    namespace: str
    kind: str
    """ENTRY or BLOB: the directory it is in."""
    name: str
    size: int
    mtime: float
    """When it was last written or read (reads touch entries): what "recently used" means."""
    handle: Any
    """The tier's own reference to it (a path)."""
    regular: bool = True
    """False for what is not a regular file (a directory, a FIFO, a symlink) where one should be."""
    temporary: bool = False
    """Left half-written by a writer that died."""


class BaseTier:
    """Defaults for the batch methods, as loops over the single ones."""

    name = "base"
    scope = "process"
    corrupt_sink: Callable[[CorruptData], None] | None = None

    def report_corrupt(self, exc: CorruptData) -> None:
        """Report bad data found at one key (and removed or reset): to the sink, else the log."""
        (self.corrupt_sink or log_corrupt)(exc)

    def get(self, key: str) -> bytes | _Missing:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_many(self, keys: Iterable[str]) -> list[bytes | _Missing]:
        return [self.get(key) for key in keys]

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
