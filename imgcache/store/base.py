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
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol, runtime_checkable

from ..errors import ConfigError, CorruptData

log = logging.getLogger("imgcache")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""What ``Tier.get`` returns for a key it does not hold."""

ENTRY: Final = "e"
BLOB: Final = "b"
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HEX_ID = re.compile(r"[0-9a-f]{64}")
"""What the ``<id>`` of a logical key is: a sha256, in hex."""


def check_namespace(namespace: str) -> str:
    """Namespaces become parts of Redis keys, S3 keys and paths, so they are kept plain."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(
            f"namespace {namespace!r} must be 1-64 characters of letters, digits, '.', '_', '-'"
            " starting with a letter or digit"
        )
    return namespace


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
    shared: bool
    """Other processes see what this tier stores."""
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


class CounterStore(Protocol):
    """A shared tier that can also aggregate stats counters across processes."""

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None: ...

    def read_counters(self, namespace: str) -> dict[str, float]: ...


class BaseTier:
    """Defaults for the batch methods, as loops over the single ones."""

    name = "base"
    shared = False
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
