"""Live calls wait their turn under per-model token buckets instead of meeting a 429.

A miss takes a place in its model's queue (requests and images per minute, see
:mod:`.limiter`) before it goes upstream, and waits for it, up to ``queue_timeout``; a call
whose turn would come later is refused at once with RateLimited (nothing taken from the
buckets), and its ``retry_after`` says when to try. A 429 from the upstream pauses the model's
buckets for its Retry-After (else a back-off), so every caller of that model waits it out. The
buckets are the store's shared ones (Redis: every worker of the namespace, the prewarm job's
too, since the limits are the account's), this process's own while Redis is away.

Counted: ``rate.queued`` (calls that had to wait: each would have gone over the limit),
``rate.waited_seconds``, ``rate.refused`` (longer than the queue timeout) and
``rate.upstream_429``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..errors import RateLimited
from .config import ANY_MODEL, RateLimits
from .limiter import BucketStore, LocalBuckets, RateLimiter
from .outcomes import Backoff, classify

if TYPE_CHECKING:
    from ..request import Request
    from ..stats import Stats

_BACKOFF = Backoff(base=1.0, cap=60.0)
_MAKES_IMAGES = (".edit", ".edits")  # image edits are keyed as vision calls (their inputs are images)


class Shaping:
    """One cache's queue in front of the upstream; see the module doc. ``shared``: the
    store's buckets (None: this process's own)."""

    def __init__(self, limits: RateLimits, shared: BucketStore | None, stats: Stats, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.shared = shared
        self.stats = stats
        self.clock = clock
        self._own = LocalBuckets()
        self._limiters: dict[tuple[str, int], RateLimiter] = {}

    def _limiter(self, bucket: str, images: int) -> RateLimiter:
        found = self._limiters.get((bucket, images))
        if found is None:  # rates per bucket and call size (the image bucket holds one call)
            rates = self.limits.rates_for(bucket, images)
            found = RateLimiter(rates, self.shared or self._own, fallback=self._own)
            self._limiters[(bucket, images)] = found
        return found

    def _bucket(self, request: Request) -> tuple[str, int]:
        """The call's bucket and its images: a model named in the limits has its own bucket;
        every other one shares ``"*"``'s (so a caller naming models cannot make buckets without end)."""
        model, images = _model_and_images(request)
        named = model in self.limits.rpm or model in self.limits.ipm
        return (model if named else ANY_MODEL), images

    # -- a call's turn ----------------------------------------------------------------------------

    def wait_turn(self, request: Request) -> None:
        """Wait for the call's turn; RateLimited if it would come after the queue timeout."""
        model, images = self._bucket(request)
        limiter, started = self._limiter(model, images), self.clock()
        while True:
            left = self.limits.queue_timeout - (self.clock() - started)
            wait, epoch = limiter.turn(model, images, left)
            if epoch < 0:
                self._refused(model, wait)
            if wait > 0:
                time.sleep(wait)
            if wait <= 0 or limiter.still(model, epoch):
                return self._went(started)
            # a 429 paused the model meanwhile: queue again behind the pause

    async def await_turn(self, request: Request) -> None:
        """:meth:`wait_turn` for a coroutine: the buckets are asked in a worker thread."""
        model, images = self._bucket(request)
        limiter, started = self._limiter(model, images), self.clock()
        while True:
            left = self.limits.queue_timeout - (self.clock() - started)
            wait, epoch = await asyncio.to_thread(limiter.turn, model, images, left)
            if epoch < 0:
                self._refused(model, wait)
            if wait > 0:
                await asyncio.sleep(wait)
            if wait <= 0 or await asyncio.to_thread(limiter.still, model, epoch):
                return self._went(started)

    def upstream_failed(self, request: Request, exc: BaseException) -> None:
        """A 429 from the upstream pauses the model for every caller (its Retry-After, else
        a back-off)."""
        outcome = classify(exc)
        if outcome.kind != "rate_limited":
            return
        model, images = self._bucket(request)
        self.stats.add({"rate.upstream_429": 1})
        seconds = outcome.retry_after if outcome.retry_after is not None else _BACKOFF.delay(0)
        self._limiter(model, images).pause(model, seconds)

    def _went(self, started: float) -> None:
        waited = self.clock() - started
        if waited > 0.001:
            self.stats.add({"rate.queued": 1, "rate.waited_seconds": round(waited, 3)})

    def _refused(self, model: str, wait: float) -> None:
        self.stats.add({"rate.refused": 1})
        raise RateLimited(f"{model}: the next turn is {wait:.1f} s away, longer than the queue timeout "
                          f"({self.limits.queue_timeout:g} s)", retry_after=wait)


def _model_and_images(request: Request) -> tuple[str, int]:
    """The call's model (its bucket) and the images it makes (a generation's or an edit's
    ``n``; a chat or a response about images: none)."""
    params = request.params if isinstance(request.params, Mapping) else {}
    model = params.get("model")
    images = 0
    if request.kind == "generation" or request.operation.endswith(_MAKES_IMAGES):
        count = params.get("n", 1)
        images = count if isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= 100 else 1
    return (model if isinstance(model, str) and model else "default"), images
