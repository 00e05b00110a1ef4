"""Token buckets kept in a tier, shared by every process that uses it (the prewarm job's
requests and images per minute, which belong to the account, not to a process).

:class:`RedisBuckets` keeps each bucket in a hash, ``<prefix><ns>:<scope>:rate:<bucket>``, and
runs the arithmetic of :func:`imgcache.spend.limiter.reserve` and ``pause`` in a Lua script,
atomically and on the server's clock, so that workers on machines whose clocks disagree are
still lined up at the configured rate. The policy (which buckets, what to do when the tier
fails) is the caller's; calls raise TierError. The tiered store hands them out behind the
tier's breaker (:class:`GuardedBuckets`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._vocabulary import check_namespace
from .base import Breakered

if TYPE_CHECKING:
    from .redis import RedisTier


class BucketRates(Protocol):
    """Per-second rates (0: unlimited) and capacities of a request and an image bucket."""

    @property
    def requests(self) -> float: ...

    @property
    def images(self) -> float: ...

    @property
    def request_capacity(self) -> float: ...

    @property
    def image_capacity(self) -> float: ...


class SharedBuckets(Protocol):
    """What a tier's ``rate_buckets(...)`` returns (see :class:`~imgcache.store.base.RateBuckets`)."""

    def reserve(self, bucket: str, rates: BucketRates, requests: float, images: float,
                max_wait: float | None = None) -> tuple[float, int]:
        """Seconds to wait, and the epoch the reservation belongs to; a wait beyond
        ``max_wait`` is not reserved (the caller will not wait that long)."""

    def pause(self, bucket: str, rates: BucketRates, seconds: float) -> None: ...

    def epoch(self, bucket: str) -> int:
        """The current epoch of ``bucket`` (it changes with every pause)."""


# The same arithmetic as imgcache.spend.limiter.reserve() / pause(), on the server's clock.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local rr, ri, cr, ci = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'r', 'i', 'at', 'e')
local tr, ti, at, e = tonumber(s[1]) or cr, tonumber(s[2]) or ci, tonumber(s[3]) or now, tonumber(s[4]) or 0
if mode == 'epoch' then
  return {'0', tostring(e)}
end
local wait = 0
if mode == 'pause' then
  tr, ti, at, e = 1, ci, math.max(at, now + tonumber(ARGV[6])), e + 1
else
  if now > at then
    tr = math.min(cr, tr + (now - at) * rr)
    ti = math.min(ci, ti + (now - at) * ri)
    at = now
  end
  local debt = 0
  if rr > 0 then
    tr = tr - tonumber(ARGV[6])
    debt = math.max(debt, -tr / rr)
  end
  if ri > 0 then
    ti = ti - tonumber(ARGV[7])
    debt = math.max(debt, -ti / ri)
  end
  wait = (at - now) + debt
  local max_wait = tonumber(ARGV[9])
  if max_wait >= 0 and wait > max_wait then
    return {string.format('%.17g', wait), tostring(e)}
  end
end
redis.call('HSET', KEYS[1], 'r', string.format('%.17g', tr), 'i', string.format('%.17g', ti),
           'at', string.format('%.17g', at), 'e', tostring(e))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]))
return {string.format('%.17g', wait), tostring(e)}
"""
_IDLE_MS = 3_600_000  # a bucket nobody used for an hour is forgotten (it would be full again)


class _Unlimited:
    """Rates for a call that only reads the epoch."""

    requests = images = 0.0
    request_capacity = image_capacity = 1.0


class RedisBuckets:
    """Buckets in Redis, shared by every process of a namespace; see the module doc."""

    def __init__(self, tier: RedisTier, namespace: str, scope: str) -> None:
        self.tier = tier
        self._base = f"{tier.prefix}{check_namespace(namespace)}:{check_namespace(scope)}:rate:"
        self._script: Any = None

    def _key(self, bucket: str) -> str:
        return self._base + re.sub(r"[^A-Za-z0-9._-]", "_", bucket)

    def _run(self, bucket: str, mode: str, rates: BucketRates, *extra: float, max_wait: float | None = None
             ) -> tuple[float, int]:
        with self.tier.translate_errors():
            if self._script is None:
                self._script = self.tier.client.register_script(_SCRIPT)
        key = self._key(bucket)
        args = [mode, rates.requests, rates.images, rates.request_capacity, rates.image_capacity,
                *extra, *([0] * (2 - len(extra))), _IDLE_MS, -1 if max_wait is None else max_wait]
        # a bucket key someone overwrote with another type is removed, not fallen back from for ever
        wait, epoch = self.tier.repairing(key, "hash", lambda: self._script(keys=[key], args=args))
        return float(wait), int(epoch)

    def reserve(self, bucket: str, rates: BucketRates, requests: float, images: float,
                max_wait: float | None = None) -> tuple[float, int]:
        return self._run(bucket, "reserve", rates, requests, images, max_wait=max_wait)

    def pause(self, bucket: str, rates: BucketRates, seconds: float) -> None:
        self._run(bucket, "pause", rates, seconds)

    def epoch(self, bucket: str) -> int:
        return self._run(bucket, "epoch", _Unlimited())[1]


class GuardedBuckets(Breakered):
    """A tier's buckets behind that tier's breaker (see :class:`~imgcache.store.base.Breakered`):
    the caller's fallback buckets take over while it is down."""

    def __init__(self, buckets: SharedBuckets, tier_name: str, guard: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__(tier_name, guard, "shared rate buckets unavailable; using local ones")
        self._buckets = buckets

    def reserve(self, bucket: str, rates: BucketRates, requests: float, images: float,
                max_wait: float | None = None) -> tuple[float, int]:
        return self._guarded(lambda: self._buckets.reserve(bucket, rates, requests, images,  # type: ignore[no-any-return]
                                                           max_wait))

    def pause(self, bucket: str, rates: BucketRates, seconds: float) -> None:
        self._guarded(lambda: self._buckets.pause(bucket, rates, seconds))

    def epoch(self, bucket: str) -> int:
        return self._guarded(lambda: self._buckets.epoch(bucket))  # type: ignore[no-any-return]
