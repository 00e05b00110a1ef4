"""Token buckets for requests and images per minute, per model.

OpenAI's image rate limits are per model (requests and images per minute), and they belong
to the account, not to a process. So a :class:`RateLimiter` keeps one pair of buckets per
model, shared by every thread of a worker (:class:`LocalBuckets`) or, with Redis, by every
worker of the namespace (the store's, :meth:`Cache.rate_buckets <imgcache.cache.Cache.rate_buckets>`:
the same arithmetic in a Lua script on the server's clock, in ``imgcache/store/rate.py``).

A call *reserves* its tokens before it waits (a bucket may go negative: the debt is the
queue) and then sleeps for the reservation's wait: concurrent callers are lined up at exactly
the configured rate, without polling. A 429 *pauses* the model's buckets: nothing is granted
before the pause ends, then one call goes at its end and the rest follow at the steady rate,
not in a burst. A pause starts a new *epoch*: callers that reserved before it wake up, see
the epoch changed, and queue again behind the pause (their old reservations are forgotten).

The arithmetic is pure functions, :func:`reserve` and :func:`pause`, over a small state
``(request tokens, image tokens, at, epoch)``: tokens accrue from ``at`` (which a pause moves
into the future) at ``rate`` per second up to ``capacity``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigError

ACCOUNT = "account"
"""The scope of the store's buckets that live calls and the prewarm job share: the limits are
the account's (a namespace's: the proxy gives each API key its own)."""

State = tuple[float, float, float, int]
"""(request tokens, image tokens, at, epoch): tokens accrue from ``at`` on."""


@dataclass(frozen=True)
class Rates:
    """Per-second rates and capacities of the two buckets (rate 0: unlimited)."""

    requests: float = 0.0
    images: float = 0.0
    request_capacity: float = 1.0
    image_capacity: float = 1.0

    @classmethod
    def per_minute(cls, rpm: float | None, ipm: float | None, *, burst: float = 1.0,
                   images_per_request: int = 1) -> Rates:
        """``rpm`` requests and ``ipm`` images per minute; ``burst`` requests may go at once
        (the image bucket holds at least one request's images, or no call could ever pass)."""
        for name, value in (("rpm", rpm), ("ipm", ipm)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of calls per minute, not {value!r}")
        if not burst >= 1:
            raise ConfigError(f"burst must be at least 1, not {burst!r}")
        return cls((rpm or 0.0) / 60, (ipm or 0.0) / 60, float(burst),
                   max(float(burst), float(images_per_request)))

    @property
    def unlimited(self) -> bool:
        return self.requests == 0 and self.images == 0


def _fresh(rates: Rates, now: float) -> State:
    return rates.request_capacity, rates.image_capacity, now, 0


def reserve(state: State | None, now: float, rates: Rates, requests: float, images: float
            ) -> tuple[State, float]:
    """Take ``requests`` and ``images`` tokens; the new state and the seconds to wait before
    the call may go (0: at once)."""
    tokens_r, tokens_i, at, epoch = state if state is not None else _fresh(rates, now)
    if now > at:
        tokens_r = min(rates.request_capacity, tokens_r + (now - at) * rates.requests)
        tokens_i = min(rates.image_capacity, tokens_i + (now - at) * rates.images)
        at = now
    debt = 0.0
    if rates.requests > 0:
        tokens_r -= requests
        debt = max(debt, -tokens_r / rates.requests)
    if rates.images > 0:
        tokens_i -= images
        debt = max(debt, -tokens_i / rates.images)
    return (tokens_r, tokens_i, at, epoch), (at - now) + debt


def pause(state: State | None, now: float, rates: Rates, seconds: float) -> State:
    """Grant nothing for ``seconds`` from ``now``; then one call, then the steady rate. The
    queue's debt is forgotten: its callers queue again (a new epoch)."""
    _, _, at, epoch = state if state is not None else _fresh(rates, now)
    return 1.0, rates.image_capacity, max(at, now + seconds), epoch + 1


class BucketStore(Protocol):
    def reserve(self, scope: str, rates: Rates, requests: float, images: float,
                max_wait: float | None = None) -> tuple[float, int]:
        """Seconds to wait, and the epoch the reservation belongs to; a wait beyond
        ``max_wait`` is not reserved (the caller will not wait that long)."""

    def pause(self, scope: str, rates: Rates, seconds: float) -> None: ...

    def epoch(self, scope: str) -> int:
        """The current epoch of ``scope`` (it changes with every pause)."""


class LocalBuckets:
    """Buckets in this process, on an injectable clock (tests use a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._states: dict[str, State] = {}
        self._lock = threading.Lock()

    def reserve(self, scope: str, rates: Rates, requests: float, images: float,
                max_wait: float | None = None) -> tuple[float, int]:
        with self._lock:
            state, wait = reserve(self._states.get(scope), self.clock(), rates, requests, images)
            if max_wait is None or wait <= max_wait:
                self._states[scope] = state
        return wait, state[3]

    def pause(self, scope: str, rates: Rates, seconds: float) -> None:
        with self._lock:
            self._states[scope] = pause(self._states.get(scope), self.clock(), rates, seconds)

    def epoch(self, scope: str) -> int:
        with self._lock:
            state = self._states.get(scope)
        return 0 if state is None else state[3]


class RateLimiter:
    """Requests and images per minute, per model, over a :class:`BucketStore`.

    ``acquire`` blocks until a call may go (or ``stop`` is set); ``pause`` holds every
    caller of a model back (a 429). ``sleep(seconds, stop)`` is injectable for tests; it
    must return early when ``stop`` is set.
    """

    def __init__(self, rates: Rates, store: BucketStore | None = None,
                 sleep: Callable[[float, threading.Event], None] | None = None,
                 fallback: BucketStore | None = None) -> None:
        self.rates = rates
        self.store = store or LocalBuckets()
        self.fallback = fallback or LocalBuckets()
        self._sleep = sleep or (lambda seconds, stop: stop.wait(seconds))

    def _call(self, op: str, *args: Any) -> Any:
        """The shared store, or this process's buckets while it fails (a Redis outage must
        not stop the run; the rate then holds per worker)."""
        try:
            return getattr(self.store, op)(*args)
        except Exception:
            if self.store is self.fallback:
                raise
            return getattr(self.fallback, op)(*args)

    def acquire(self, scope: str, images: int, stop: threading.Event) -> bool:
        """Wait until one request for ``images`` images may go; False if stopped first."""
        while True:
            wait, epoch = self._call("reserve", scope, self.rates, 1, images)
            if wait > 0:
                self._sleep(wait, stop)
            if stop.is_set():
                return False
            if wait <= 0 or self._call("epoch", scope) == epoch:
                return True
            # A 429 paused the model while we slept: queue again behind the pause.

    def turn(self, scope: str, images: int, timeout: float) -> tuple[float, float]:
        """One attempt at a place in the queue within ``timeout`` seconds: (seconds to wait,
        epoch) if taken; (the wait, -1) if it is longer than ``timeout`` (nothing taken)."""
        timeout = max(0.0, timeout)
        wait, epoch = self._call("reserve", scope, self.rates, 1, images, timeout)
        return (wait, -1) if wait > timeout else (max(0.0, wait), epoch)

    def still(self, scope: str, epoch: float) -> bool:
        """Whether no pause came since the place of ``epoch`` was taken."""
        return self._call("epoch", scope) == epoch

    def pause(self, scope: str, seconds: float) -> None:
        if seconds > 0:
            self._call("pause", scope, self.rates, seconds)
