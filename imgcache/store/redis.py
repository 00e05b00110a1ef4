"""Redis tier: a single server or a Redis Cluster behind the same URL.

Logical key ``"ns/e/<id>"`` is stored as ``"<prefix>ns:e:{<id>}"``. The hash tag on the id
puts an entry and its lock (``"<prefix>ns:lock:{<id>}"``) in one cluster slot.

Nothing touches the network in the constructor. The first call asks the server whether it
is a cluster node (``INFO cluster``) and builds the matching redis-py client; if the server
cannot be reached the call raises :class:`~imgcache.errors.TierUnavailable` and the next
call asks again. Timeouts are short and retries minimal (one immediate retry, which
replaces a pooled connection that died with a restarted server): tripping and closing the
breaker is the front's job.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError, TierTimeout, TierUnavailable
from .base import ENTRY, MISSING, BaseTier, _Missing, split_key

if TYPE_CHECKING:
    from redis.lock import Lock


class RedisTier(BaseTier):
    """Bytes under Redis string keys; also a :class:`~imgcache.store.base.CounterStore`."""

    name = "redis"
    shared = True

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
        with self.translate_errors():
            value = self.client.get(name)
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

    def mutex(self, key: str, timeout: float) -> Lock:
        """A distributed lock for entry ``key`` that expires after ``timeout`` seconds.

        ``thread_local=False`` lets another thread (a lock-extending heartbeat) extend or
        release it. Its methods raise redis-py errors; wrap calls in :meth:`translate_errors`.
        """
        namespace, kind, ident = split_key(key)
        if kind != ENTRY:
            raise ValueError(f"locks are taken on entry keys, not {key!r}")
        name = f"{self.prefix}{namespace}:lock:{{{ident}}}"
        return self.client.lock(name, timeout=timeout, thread_local=False)

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None:
        if not deltas:
            return
        name = self._stats_key(namespace)
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for field, delta in deltas.items():
                pipe.hincrbyfloat(name, field, float(delta))
            pipe.execute()

    def read_counters(self, namespace: str) -> dict[str, float]:
        name = self._stats_key(namespace)
        with self.translate_errors():
            raw = self.client.hgetall(name)
        return {field.decode(): float(value) for field, value in raw.items()}

    # -- feeds: append-only record logs and short "recent" lists (RecordFeed) ---------------

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None:
        name = self._feed_key(namespace, feed)
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            for record in records:
                pipe.xadd(name, {"r": record}, maxlen=max_len, approximate=True)
            pipe.execute()

    def read_records(self, namespace: str, feed: str, cursor: str | None, limit: int = 10_000
                     ) -> tuple[list[bytes], str | None]:
        """Records after ``cursor`` (None: from the start), and the cursor to read on from."""
        name = self._feed_key(namespace, feed)
        with self.translate_errors():
            rows = self.client.xrange(name, min=f"({cursor}" if cursor else "-", max="+", count=limit)
        if not rows:
            return [], cursor
        return [fields.get(b"r", b"") for _, fields in rows], rows[-1][0].decode()

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None:
        name = self._feed_key(namespace, feed)
        with self.translate_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(name, record)
            pipe.ltrim(name, 0, keep - 1)
            pipe.execute()

    def read_recent(self, namespace: str, feed: str) -> list[bytes]:
        """Newest first."""
        with self.translate_errors():
            return list(self.client.lrange(self._feed_key(namespace, feed), 0, -1))

    def _feed_key(self, namespace: str, feed: str) -> str:
        return f"{self.prefix}{namespace}:{feed}"

    def _stats_key(self, namespace: str) -> str:
        return f"{self.prefix}{namespace}:stats"

    @contextlib.contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn redis-py and socket errors into TierError; for callers of ``client``/``mutex``."""
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.TimeoutError as exc:
            raise TierTimeout(self.name, str(exc) or type(exc).__name__) from exc
        except (exceptions.RedisError, exceptions.RedisClusterException, OSError) as exc:
            raise TierUnavailable(self.name, str(exc) or type(exc).__name__) from exc
