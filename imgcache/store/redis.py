"""Redis tier: a single server or a Redis Cluster behind the same URL.

Logical key ``"ns/e/<id>"`` is stored as ``"<prefix>ns:e:{<id>}"``. The hash tag on the id
puts an entry and its lock (``"<prefix>ns:lock:{<id>}"``) in one cluster slot.

Nothing touches the network in the constructor. The first call asks the server whether it
is a cluster node (``INFO cluster``) and builds the matching redis-py client; if the server
cannot be reached the call raises :class:`~imgcache.errors.TierUnavailable` and the next
call asks again. Timeouts are short and retries minimal (one immediate retry, which
replaces a pooled connection that died with a restarted server): tripping and closing the
breaker is the front's job.

Every key under the prefix is the cache's. A key holding another type than the cache puts
there (someone ran ``HSET`` or ``LPUSH`` on it) is removed, reported and the call made again
(:meth:`RedisTier.repairing`); a counter field that is not a number is reset. Error replies
about one key's value are :class:`~imgcache.errors.CorruptData`; only the others (connection
errors, timeouts, LOADING, READONLY, CLUSTERDOWN, OOM, ...) make the tier unavailable.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from .._vocabulary import NAMESPACE
from ..errors import ConfigError, CorruptData, TierTimeout, TierUnavailable
from ..stats import counter_value
from .base import ENTRY, MISSING, BaseTier, _Missing, log_corrupt, split_key

if TYPE_CHECKING:
    from .claims import RedisClaims
    from .ledger import RedisLedger
    from .rate import RedisBuckets

try:
    from redis.lock import Lock
except ImportError:  # the tier's constructor says what to install
    Lock = object  # type: ignore[assignment,misc]

T = TypeVar("T")
_PAGE = 10_000
_SCAN_COUNT = 1000

_BAD_VALUE = ("WRONGTYPE", "hash value is not", "value is not a valid float",
              "value is not an integer", "increment would produce NaN or Infinity")
"""Error replies about one key's value (its type, a field that is not a number): bad data."""

_REMOVE_GARBAGE = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local expires = ARGV[2] == '0' or redis.call('PTTL', KEYS[1]) ~= -1
if kind == 'none' or (kind == ARGV[1] and expires) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""
"""Delete KEYS[1] if it holds another type than ARGV[1] (or, with ARGV[2] = 1, has no
expiry): one atomic step, so that a key another process has just repaired is left alone."""


class RedisTier(BaseTier):
    """Bytes under Redis string keys; also shared counters, feeds, locks, secrets, claims and
    token buckets."""

    name = "redis"
    scope = "fleet"

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        prefix: str = "imgcache:",
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ConfigError(
                "the Redis tier needs redis-py: pip install 'imgcache[redis]'"
            ) from exc
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"redis_url {url!r} must start with redis://, rediss:// or unix://")
        self._redis = redis
        self.url = url
        self.prefix = prefix
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 1),
        }
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The redis-py client (``Redis`` or ``RedisCluster``), detecting which on first use."""
        client = self._client
        if client is None:
            with self._client_lock, self.translate_errors():
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, self._redis.cluster.RedisCluster)

    def _connect(self) -> Any:
        probe = self._redis.Redis.from_url(self.url, **self._options)
        try:
            enabled = probe.info("cluster").get("cluster_enabled")
        except BaseException:
            probe.close()
            raise
        if not enabled:
            return probe
        probe.close()
        options = dict(self._options)
        # RedisCluster takes its retry policy itself; node connections never retry.
        return self._redis.cluster.RedisCluster.from_url(
            self.url, retry=options.pop("retry"), **options
        )

    def redis_key(self, key: str) -> str:
        """The Redis key that holds logical ``key``."""
        namespace, kind, ident = split_key(key)
        return f"{self.prefix}{namespace}:{kind}:{{{ident}}}"

    def get(self, key: str) -> bytes | _Missing:
        name = self.redis_key(key)
        value = self.repairing(name, "string", lambda: self.client.get(name))
        return MISSING if value is None else value

    def get_many(self, keys: Iterable[str]) -> list[bytes | _Missing]:
        names = [self.redis_key(key) for key in keys]
        if not names:
            return []
        with self.translate_errors():
            client = self.client
            if self.is_cluster:
                values = client.mget_nonatomic(names)
            else:
                values = client.mget(names)
        return [MISSING if value is None else value for value in values]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        name = self.redis_key(key)
        with self.translate_errors():
            if ttl is None:
                self.client.set(name, value)
            elif ttl <= 0:
                self.client.delete(name)  # already expired: storing it would resurrect it
            else:
                self.client.set(name, value, px=max(1, math.ceil(ttl * 1000)))

    def delete(self, key: str) -> None:
        name = self.redis_key(key)
        with self.translate_errors():
            self.client.delete(name)

    def ping(self) -> None:
        with self.translate_errors():
            self.client.ping()

    def close(self) -> None:
        """Drop the connections; a later call reconnects (and detects the mode again)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with self.translate_errors():
                client.close()

    def try_mutex(self, key: str, timeout: float) -> Lock | None:
        """The lock on entry ``key`` if it was free (now taken), else None."""
        with self.translate_errors():
            lock = self.mutex(key, timeout)
            return lock if lock.acquire(blocking=False) else None

    def mutex(self, key: str, timeout: float) -> Lock:
        """A distributed lock for entry ``key`` that expires after ``timeout`` seconds (see
        :meth:`lock`)."""
        namespace, kind, ident = split_key(key)
        if kind != ENTRY:
            raise ValueError(f"locks are taken on entry keys, not {key!r}")
        return self.lock(f"{self.prefix}{namespace}:lock:{{{ident}}}", timeout)

    def lock(self, name: str, timeout: float) -> Lock:
        """A redis-py lock on the Redis key ``name`` that expires after ``timeout`` seconds.

        ``thread_local=False`` lets another thread (a lock-extending heartbeat) extend or
        release it. Its methods raise redis-py errors; wrap calls in :meth:`translate_errors`.
        Acquiring it removes garbage at the key first (see :class:`_RepairingLock`).
        """
        return _RepairingLock(self, name, timeout)

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None:
        """HINCRBYFLOAT every field; a field that is not a number is reset to its delta."""
        if not deltas:
            return
        name = self._stats_key(namespace)
        fields = list(deltas)

        def increment() -> list[str]:
            pipe = self.client.pipeline(transaction=False)
            for field in fields:
                pipe.hincrbyfloat(name, field, float(deltas[field]))
            garbage = []
            for field, reply in zip(fields, pipe.execute(raise_on_error=False)):
                if isinstance(reply, Exception) and (_wrong_type(reply) or not _bad_value(reply)):
                    raise reply  # WRONGTYPE: the whole key is garbage, which repairing removes
                if isinstance(reply, Exception) or counter_value(reply) is None:  # "inf" stays inf
                    garbage.append(field)
            return garbage

        garbage = self.repairing(name, "hash", increment)
        if garbage:
            with self.translate_errors(name):
                self.client.hset(name, mapping={field: float(deltas[field]) for field in garbage})
            for field in garbage:
                what = f"{name} field {field!r} was not a number; reset"
                self.report_corrupt(CorruptData(self.name, what))

    def read_counters(self, namespace: str) -> dict[str, float]:
        """The counters; a field that is not a number is skipped (the next add resets it)."""
        name = self._stats_key(namespace)
        counters: dict[str, float] = {}
        raw = self.repairing(name, "hash", lambda: self.client.hgetall(name))
        for field, value in raw.items():
            number = counter_value(value)
            if number is None:
                what = f"{name} field {field!r} is not a number; skipped"
                log_corrupt(CorruptData(self.name, what))
            else:
                counters[field.decode(errors="replace")] = number
        return counters

    # -- feeds: append-only record logs and short "recent" lists (RecordFeed) ---------------

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None:
        name = self._feed_key(namespace, feed)

        def append() -> None:
            pipe = self.client.pipeline(transaction=False)
            for record in records:
                pipe.xadd(name, {"r": record}, maxlen=max_len, approximate=True)
            pipe.execute()

        self.repairing(name, "stream", append)

    def read_records(self, namespace: str, feed: str, cursor: str | None, limit: int = 10_000
                     ) -> tuple[list[bytes], str | None]:
        """Records after ``cursor`` (None: from the start), and the cursor to read on from."""
        name = self._feed_key(namespace, feed)
        start = f"({cursor}" if cursor else "-"
        rows = self.repairing(name, "stream",
                               lambda: self.client.xrange(name, min=start, max="+", count=limit))
        if not rows:
            return [], cursor
        return [fields.get(b"r", b"") for _, fields in rows], rows[-1][0].decode()

    def trim_records(self, namespace: str, feed: str, below: str) -> None:
        name = self._feed_key(namespace, feed)
        self.repairing(name, "stream", lambda: self.client.xtrim(name, minid=below, approximate=False))

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None:
        name = self._feed_key(namespace, feed)

        def push() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(name, record)
            pipe.ltrim(name, 0, keep - 1)
            pipe.execute()

        self.repairing(name, "list", push)

    def read_recent(self, namespace: str, feed: str) -> list[bytes]:
        """Newest first."""
        name = self._feed_key(namespace, feed)
        return list(self.repairing(name, "list", lambda: self.client.lrange(name, 0, -1)))

    def append_log(self, namespace: str, log: str, record: bytes, *, max_records: int,
                   max_bytes: int) -> None:
        """A stream trimmed to about ``max_records`` (by whole stream nodes)."""
        self.append_records(namespace, log, [record], max_records)

    def read_log(self, namespace: str, log: str) -> list[bytes]:
        cursor: str | None = None
        found: list[bytes] = []
        while True:
            records, cursor = self.read_records(namespace, log, cursor, _PAGE)
            found += records
            if len(records) < _PAGE:
                return found

    def counter_namespaces(self, limit: int) -> set[str]:
        """Namespaces with a ``<prefix><namespace>:stats`` hash, found with SCAN (``count``
        1,000 a step, every primary of a Cluster), never KEYS."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*:stats"
        found: set[str] = set()
        with self.translate_errors():
            for key in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
                name = key.decode(errors="replace")[len(self.prefix):-len(":stats")]
                if NAMESPACE.fullmatch(name):
                    found.add(name)
                    if len(found) > limit:
                        break
        return found

    def keep_secret(self, name: str, fresh: bytes) -> bytes:
        """``SET NX``: the first process's secret is everyone's."""
        key = f"{self.prefix}{name}"
        with self.translate_errors(key):
            self.client.set(key, fresh, nx=True)
            stored = self.client.get(key)
        if not isinstance(stored, bytes) or len(stored) < 16:
            raise CorruptData(self.name, f"{key} does not hold a secret")
        return stored

    def claims(self, namespace: str, scope: str, *, lease: float, refusal_ttl: float) -> RedisClaims:
        """Leased locks and expiring refusals (see :mod:`imgcache.store.claims`)."""
        from .claims import RedisClaims

        return RedisClaims(self, namespace, scope, lease=lease, refusal_ttl=refusal_ttl)

    def rate_buckets(self, namespace: str, scope: str) -> RedisBuckets:
        """Token buckets on the server's clock (see :mod:`imgcache.store.rate`)."""
        from .rate import RedisBuckets

        return RedisBuckets(self, namespace, scope)

    def ledger(self, owner: str) -> RedisLedger:
        """Budget windows as hashes changed by a Lua script (see :mod:`imgcache.store.ledger`)."""
        from .ledger import RedisLedger

        return RedisLedger(self, owner)

    def _feed_key(self, namespace: str, feed: str) -> str:
        return f"{self.prefix}{namespace}:{feed}"

    def _stats_key(self, namespace: str) -> str:
        return f"{self.prefix}{namespace}:stats"

    def repairing(self, name: str, kind: str, op: Callable[[], T]) -> T:
        """Run ``op``, Redis calls on the key ``name``, which holds a ``kind`` (string, hash,
        list, stream) when it exists. If it holds another type, remove it, report it and run
        ``op`` once more: a bad key costs itself, never the tier. Errors as TierError; also
        for the keys others keep under the prefix (the prewarm limiter's buckets)."""
        with self.translate_errors(name):
            try:
                return op()
            except self._redis.exceptions.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
            self.remove_garbage(name, kind)
            return op()

    def remove_garbage(self, name: str, kind: str, *, expiring: bool = False) -> bool:
        """Delete the key ``name`` if it holds another type than ``kind`` (or, ``expiring``,
        has no expiry), atomically; report it. Whether it did. Redis errors propagate."""
        removed = bool(self.client.eval(_REMOVE_GARBAGE, 1, name, kind, int(expiring)))
        if removed:
            held = f"{'no expiry or ' if expiring else ''}another type than {kind}"
            self.report_corrupt(CorruptData(self.name, f"{name} held {held}; removed"))
        return removed

    @contextlib.contextmanager
    def translate_errors(self, key: str | None = None) -> Iterator[None]:
        """Turn redis-py and socket errors into TierError; for callers of ``client``/``mutex``.
        An error about the value at one key (``key`` names it) is CorruptData: that key is bad,
        the tier is fine."""
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.TimeoutError as exc:
            raise TierTimeout(self.name, str(exc) or type(exc).__name__) from exc
        except exceptions.ResponseError as exc:
            if _bad_value(exc):
                raise CorruptData(self.name, f"{key or 'a key'}: {exc}") from exc
            raise TierUnavailable(self.name, str(exc) or type(exc).__name__) from exc
        except (exceptions.RedisError, exceptions.RedisClusterException, OSError) as exc:
            raise TierUnavailable(self.name, str(exc) or type(exc).__name__) from exc


def _reply(exc: BaseException) -> str:
    """An error reply's text, without the command a pipeline puts in front of it."""
    return str(exc).rpartition("caused error: ")[2].removeprefix("ERR ")


def _bad_value(exc: BaseException) -> bool:
    return _reply(exc).startswith(_BAD_VALUE)


def _wrong_type(exc: BaseException) -> bool:
    return _reply(exc).startswith("WRONGTYPE")


class _RepairingLock(Lock):  # type: ignore[misc,valid-type]
    """redis-py's lock, except that a failed attempt checks whether what holds the key is a
    lock at all: a lock is a string with an expiry, so anything else (a hash someone wrote,
    a string without expiry) would block every caller for ever. It is removed, reported, and
    the attempt made again."""

    def __init__(self, tier: RedisTier, name: str, timeout: float) -> None:
        super().__init__(tier.client, name, timeout=timeout, thread_local=False)
        self.tier = tier

    def do_acquire(self, token: Any) -> bool:
        if super().do_acquire(token):
            return True
        removed = self.tier.remove_garbage(self.name, "string", expiring=True)
        return removed and bool(super().do_acquire(token))
