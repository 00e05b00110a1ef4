"""The path of one call: look up, serve, wait for an identical call in flight, call upstream,
store. What :meth:`Cache.fetch <imgcache.cache.Cache.fetch>` and ``afetch`` run.

Single-flight has three layers (see :mod:`imgcache.flight`): the threads or tasks of this
process (one leader per key), other processes (a shared lock, and a look at the store after
each try), and paraphrases in flight (a semantic match waits for the call it matches).
A call made with ``lookup=False`` or ``store=False`` takes no part in single-flight: its
answer is not one that others may share.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import codec
from . import manifest as manifests
from ._vocabulary import Sentinel
from .errors import CorruptData, ImageError, UncachedResultWarning, UnstorableResult
from .flight import WAIT, LocalFlight, SharedLocks
from .manifest import Hit
from .pricing import as_usd

if TYPE_CHECKING:
    from ._lookup import Lookup
    from .request import Request
    from .spend.shaping import Shaping
    from .spend.spending import Hold, Spending
    from .stats import Stats
    from .store.tiered import TieredStore

log = logging.getLogger("imgcache")
T = TypeVar("T")
Cost = float | None | Callable[[T], float | None]
"""What an upstream call costs in USD: known before the call, or computed from its result
(a response's token usage), or None when unknown."""
StoredListener = Callable[["Request", dict[str, Any]], None]
_NOT_SERVED = Sentinel("NOT_SERVED")
_MISS = {"misses": 1, "upstream_calls": 1}


def identity(value: Any) -> Any:
    return value


def as_stored(value: Any, hit: Hit) -> Any:
    return value


class Calls:
    """One namespace's calls: its lookup, flights, counters and ``on_stored`` listeners."""

    def __init__(self, namespace: str, store: TieredStore, stats: Stats, lookup: Lookup, locks: SharedLocks, *,
                 ttl: float | None, wait_timeout: float, touched: Callable[[], None],
                 spending: Spending | None = None, shaping: Shaping | None = None) -> None:
        self.namespace = namespace
        self.spending = spending
        """The budget every upstream call draws on (None: no budget)."""
        self.shaping = shaping
        """The queue every upstream call waits its turn in (None: no rate limits)."""
        self.store = store
        self.stats = stats
        self.lookup = lookup
        self.locks = locks
        self.ttl = ttl
        self.wait_timeout = wait_timeout
        self.touched = touched
        """Called after each hit and store (the cache starts publishing its counters)."""
        self.flight = LocalFlight()
        self.async_flight = LocalFlight(asyncio.Event, per_loop=True)
        self.on_stored: list[StoredListener] = []

    def fetch(self, request: Request, upstream: Callable[[], T], *, to_storable: Callable[[T], Any] = identity,
              from_storable: Callable[[Any, Hit], T] = as_stored, cost_usd: Cost[T] = None,
              estimate_usd: float | Callable[[], float | None] | None = None, lookup: bool = True,
              store: bool = True) -> T:
        """See :meth:`Cache.fetch <imgcache.cache.Cache.fetch>`."""
        try:
            _check_inputs(request)
            hit = self.lookup.get(request.key) if lookup else None
            if hit is None and lookup and store:
                hit = self.lookup.near(request)
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=True)
            price = _Price(cost_usd, estimate_usd)
            hold = self._reserve(request, price)
            result = self._paid(request, upstream, {}, hold)
            self._settle(request, hold, price, result)
            return result
        served = self._serve(request, hit, from_storable, first=True, renew=store)
        if served is not _NOT_SERVED:
            return served
        price = _Price(cost_usd, estimate_usd)  # a miss: what its upstream call costs
        if not (lookup and store):  # no flight: this call's answer is not for others to share
            counts = self._direct_counts(lookup)
            hold = self._reserve(request, price)
            started = time.perf_counter()
            result = self._paid(request, upstream, counts, hold)
            return self._after_upstream(request, result, to_storable, price, time.perf_counter() - started,
                                        counts=counts, store=store, hold=hold)
        self.stats.add({"requests": 1})
        while True:
            with self.flight.lead(request.key) as flight:
                if flight is None:
                    return self._lead(request, upstream, to_storable, from_storable, price)
                flight.done.wait(self.wait_timeout)
                served = self._serve(request, self.lookup.get(request.key), from_storable, coalesced=True)
                if served is not _NOT_SERVED:
                    return served
                if flight.error is not None:
                    raise flight.error
            # The leader's result was not stored (unstorable): take a turn ourselves.

    async def afetch(self, request: Request, upstream: Callable[[], Awaitable[T]], *,
                     to_storable: Callable[[T], Any] = identity,
                     from_storable: Callable[[Any, Hit], T] = as_stored, cost_usd: Cost[T] = None,
                     estimate_usd: float | Callable[[], float | None] | None = None, lookup: bool = True,
                     store: bool = True) -> T:
        """The twin of :meth:`fetch` for coroutines: tier I/O runs in worker threads."""
        try:
            _check_inputs(request)
            hit = await self._aget(request) if lookup else None
            if hit is None and lookup and store and self.lookup.near_wanted(request):
                await self.lookup.embed_ahead(request)
                hit = await asyncio.to_thread(self.lookup.near, request)
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=True)
            price = _Price(cost_usd, estimate_usd)
            hold = await self._areserve(request, price)
            result = await self._apaid(request, upstream, {}, hold)
            await asyncio.to_thread(self._settle, request, hold, price, result)
            return result
        served = self._serve(request, hit, from_storable, first=True, renew=store)
        if served is not _NOT_SERVED:
            return served
        price = _Price(cost_usd, estimate_usd)  # a miss: what its upstream call costs
        if not (lookup and store):
            counts = self._direct_counts(lookup)
            hold = await self._areserve(request, price)
            started = time.perf_counter()
            result = await self._apaid(request, upstream, counts, hold)
            return await asyncio.to_thread(self._after_upstream, request, result, to_storable, price,
                                           time.perf_counter() - started, counts=counts, store=store, hold=hold)
        self.stats.add({"requests": 1})
        while True:
            with self.async_flight.lead(request.key) as flight:
                if flight is None:
                    return await self._alead(request, upstream, to_storable, from_storable, price)
                try:
                    await asyncio.wait_for(flight.done.wait(), self.wait_timeout)
                except asyncio.TimeoutError:
                    pass
                served = self._serve(request, await self._aget(request), from_storable, coalesced=True)
                if served is not _NOT_SERVED:
                    return served
                if flight.error is not None:
                    raise flight.error

    def _lead(self, request: Request, upstream: Callable[[], T], to_storable: Callable[[T], Any],
              from_storable: Callable[[Any, Hit], T], price: _Price[T]) -> T:
        """The call of this process's leader: wait for another process's leader (its store
        is looked at after each try), then for a paraphrase in flight, else call upstream."""
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.01
        while True:
            lock, hit = self._try_lock(request)
            served = self._serve(request, hit, from_storable, coalesced=True)
            if served is not _NOT_SERVED or lock is not WAIT or time.monotonic() > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        try:
            if served is not _NOT_SERVED:
                return served
            with self.lookup.similar_flight(request, self.lookup.similar_item(request)) as similar:
                if similar is not None:  # the same thing in other words is being made: wait for it
                    similar.wait(self.wait_timeout)
                    served = self._serve(request, self.lookup.near(request), from_storable, coalesced=True)
                    if served is not _NOT_SERVED:
                        return served
                hold = self._reserve(request, price)
                started = time.perf_counter()
                result = self._paid(request, upstream, _MISS, hold)
                return self._after_upstream(request, result, to_storable, price, time.perf_counter() - started,
                                            hold=hold)
        finally:
            self.locks.release(lock)

    async def _alead(self, request: Request, upstream: Callable[[], Awaitable[T]],
                     to_storable: Callable[[T], Any], from_storable: Callable[[Any, Hit], T],
                     price: _Price[T]) -> T:
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.01
        while True:
            lock, hit = await asyncio.to_thread(self._try_lock, request)
            served = self._serve(request, hit, from_storable, coalesced=True)
            if served is not _NOT_SERVED or lock is not WAIT or time.monotonic() > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        try:
            if served is not _NOT_SERVED:
                return served
            wanted = self.lookup.semantic_wanted(request)
            item = await asyncio.to_thread(self.lookup.similar_item, request) if wanted else None
            with self.lookup.similar_flight(request, item) as similar:
                if similar is not None:  # the same thing in other words is being made: wait for it
                    await similar.wait_async(self.wait_timeout)
                    hit = await asyncio.to_thread(self.lookup.near, request)
                    served = self._serve(request, hit, from_storable, coalesced=True)
                    if served is not _NOT_SERVED:
                        return served
                hold = await self._areserve(request, price)
                started = time.perf_counter()
                result = await self._apaid(request, upstream, _MISS, hold)
                return await asyncio.to_thread(self._after_upstream, request, result, to_storable, price,
                                               time.perf_counter() - started, hold=hold)
        finally:
            if lock is not None and lock is not WAIT:
                await asyncio.to_thread(self.locks.release, lock)

    def _try_lock(self, request: Request) -> tuple[Any, Hit | None]:
        """One attempt at the cross-process lock, and a look at the store made after it.

        The look is what makes a burst of identical requests one upstream call: a request
        that missed before the previous leader stored its result (its own lookup, a semantic
        match included, takes a while) leads a flight of its own after that leader is done,
        and must find the result instead of calling upstream again."""
        lock = self.locks.try_take(self.namespace, request.key)
        return lock, self.lookup.get(request.key)

    # -- the upstream call and its price ---------------------------------------------------------

    def _reserve(self, request: Request, price: _Price[Any]) -> Hold | None:
        """The call's hold on the budget (None: no budget, or not priced), then its turn under
        the rate limits; BudgetExceeded or RateLimited (its hold given back) before the call."""
        hold = None if self.spending is None else self.spending.reserve(price.estimate, request.operation)
        if self.shaping is not None:
            try:
                self.shaping.wait_turn(request)
            except BaseException:
                if hold is not None:
                    self.spending.settle(hold, 0.0)  # type: ignore[union-attr]
                raise
        return hold

    async def _areserve(self, request: Request, price: _Price[Any]) -> Hold | None:
        hold = None
        if self.spending is not None:
            hold = await asyncio.to_thread(self.spending.reserve, price.estimate, request.operation)
        if self.shaping is not None:
            try:
                await self.shaping.await_turn(request)
            except BaseException:
                if hold is not None:
                    await asyncio.to_thread(self.spending.settle, hold, 0.0)  # type: ignore[union-attr]
                raise
        return hold

    def _paid(self, request: Request, upstream: Callable[[], T], counts: Mapping[str, float], hold: Hold | None) -> T:
        """``upstream()``, counted; a failure settles the call's hold (and a 429 pauses its model)."""
        try:
            return upstream()
        except BaseException as exc:
            self._failed(request, counts, exc)
            if hold is not None:
                self.spending.settle_failure(hold, exc)  # type: ignore[union-attr]
            raise

    async def _apaid(self, request: Request, upstream: Callable[[], Awaitable[T]], counts: Mapping[str, float],
                     hold: Hold | None) -> T:
        try:
            return await upstream()
        except BaseException as exc:
            if self.shaping is not None:  # a 429 pauses the model in the store: off the event loop
                await asyncio.to_thread(self._failed, request, counts, exc)
            else:
                self._failed(request, counts, exc)
            if hold is not None:
                await asyncio.to_thread(self.spending.settle_failure, hold, exc)  # type: ignore[union-attr]
            raise

    def _failed(self, request: Request, counts: Mapping[str, float], exc: BaseException) -> None:
        self.stats.add({**counts, "upstream_errors": 1})
        if self.shaping is not None:
            self.shaping.upstream_failed(request, exc)

    def _settle(self, request: Request, hold: Hold | None, price: _Price[T], result: T) -> float | None:
        """What the call cost (USD; None: unknown), its hold settled with it (or, for a call
        that held nothing because its price was not known before it, charged)."""
        usd = price.of(request, result)
        if hold is not None:
            self.spending.settle(hold, usd)  # type: ignore[union-attr]
        elif self.spending is not None and usd:
            self.spending.charge(usd)
        return usd

    @staticmethod
    def _direct_counts(lookup: bool) -> dict[str, float]:
        """What a call made without a flight counts: a miss, or with no lookup a bypass."""
        return {"requests": 1, "upstream_calls": 1, ("misses" if lookup else "bypassed"): 1}

    def _after_upstream(self, request: Request, result: T, to_storable: Callable[[T], Any], price: _Price[T],
                        elapsed: float, *, counts: Mapping[str, float] | None = None, store: bool = True,
                        hold: Hold | None = None) -> T:
        """Count and settle an upstream call and store its result (when it can be stored faithfully)."""
        usd = self._settle(request, hold, price, result)
        self.stats.add({**(counts or _MISS), "spent_usd": usd or 0.0})
        if not store:
            return result
        try:
            self.store_result(request, to_storable(result), cost_usd=usd, elapsed=elapsed, made=True)
        except UnstorableResult as exc:
            self._uncacheable(exc)
        except Exception as exc:  # a bug on the store path must not cost a result already paid for
            log.exception("imgcache: storing %s failed; result returned uncached", request.key[:12])
            self._uncacheable(UnstorableResult(f"storing it failed: {exc!r}"))
        return result

    def _unreadable_image(self, request: Request, exc: ImageError, *, passed_through: bool) -> None:
        """An input image that cannot be read is the API's to judge: the call goes upstream
        as if there were no cache (``passed_through``), and nothing is stored for it."""
        log.warning("imgcache: %s not cached: %s", request.operation, exc)
        counts = {"unreadable_images": 1}
        if passed_through:
            counts.update({"requests": 1, "misses": 1, "upstream_calls": 1})
        self.stats.add(counts)

    def _uncacheable(self, exc: UnstorableResult) -> None:
        warnings.warn(f"imgcache: result returned uncached: {exc}", UncachedResultWarning, stacklevel=6)
        self.stats.add({"uncacheable": 1})

    async def _aget(self, request: Request) -> Hit | None:
        hit = self.lookup.get_memory(request.key)
        if hit is None and self.store.tiers:
            hit = await asyncio.to_thread(self.lookup.get, request.key)
        return hit

    def _serve(self, request: Request, hit: Hit | None, from_storable: Callable[[Any, Hit], T], *,
               first: bool = False, coalesced: bool = False, renew: bool = True) -> T | Any:
        """Turn a hit into the caller's result and count it (and, on a call's ``first``
        lookup, the request too); _NOT_SERVED if there is none or it cannot be rebuilt.
        ``renew``: a hit in the second half of its entry's life renews it (sliding TTL)."""
        if hit is None:
            return _NOT_SERVED
        manifest = hit.manifest
        try:
            result = from_storable(codec.decode(manifest["result"], hit.blobs), hit)
        except (CorruptData, UnstorableResult, KeyError, TypeError, ValueError) as exc:
            log.warning("imgcache: stored entry %s cannot be rebuilt (%r); treating as a miss",
                        request.key[:12], exc)
            self.stats.add({"corrupt": 1})
            self.store.delete(self.namespace, request.key)
            return _NOT_SERVED
        self.stats.add({
            "requests": int(first), "hits": 1, "coalesced": int(coalesced),
            "saved_usd": manifest.get("cost_usd") or 0.0, "saved_seconds": manifest.get("elapsed") or 0.0,
            f"by_tier.{hit.tier}": 1, f"by_match.{manifest.get('match', 'exact')}": 1,
        })
        self.touched()
        renewed = manifests.renewed(manifest) if renew else None
        if renewed is not None:
            self.store.rewrite_manifest(self.namespace, request.key, renewed)
        return result

    # -- writing ------------------------------------------------------------------------------

    def store_result(self, request: Request, storable: Any, *, cost_usd: float | None = None,
                     elapsed: float = 0.0, ttl: float | None = None, made: bool = False) -> bool:
        """Store a result given as storable data (see :mod:`imgcache.codec`); False, with an
        :class:`UncachedResultWarning`, when it cannot be stored faithfully. ``made``: by an
        upstream call just now (``on_stored`` listeners are told)."""
        try:
            reference, blobs = codec.encode(storable)
        except UnstorableResult as exc:
            self._uncacheable(exc)
            return False
        try:  # only fails when called directly: fetch has read the images already
            _check_inputs(request)
            images, fingerprints = self.lookup.fingerprints(request)
        except ImageError as exc:
            self._unreadable_image(request, exc, passed_through=False)
            return False
        manifest = manifests.new(request, reference, ttl=self.ttl if ttl is None else ttl, cost_usd=cost_usd,
                                 elapsed=elapsed, images=images)
        self.store.put(self.namespace, request.key, manifest, {**blobs, **fingerprints})
        self.stats.add({"stored": 1})
        self.lookup.index(request, until=manifest.get("max_expires") or 0.0)
        self.touched()
        for listener in self.on_stored if made else ():
            try:
                listener(request, manifest)
            except Exception as exc:  # a listener's failure is its own
                log.warning("imgcache: on_stored listener %r failed: %r", listener, exc)
        return True


class _Price(Generic[T]):
    """What a call costs: ``cost`` (a number, or a function of the result) and the estimate
    reserved before the call (``estimate``: a number, or a function asked when the call is
    about to go, after the lookup read its images; else ``cost`` when it is a number)."""

    def __init__(self, cost: Cost[T], estimate: float | Callable[[], float | None] | None) -> None:
        self.cost = cost
        self._estimate = estimate if estimate is not None or callable(cost) else cost

    @property
    def estimate(self) -> float | None:
        estimate = self._estimate
        if callable(estimate):
            try:
                estimate = estimate()
            except Exception as exc:  # a pricing gap costs the estimate, never the call
                log.warning("imgcache: estimating a call's price failed: %r", exc)
                return None
        return as_usd(estimate)

    def of(self, request: Request, result: T) -> float | None:
        cost: Any = self.cost
        if callable(cost):
            try:
                cost = cost(result)
            except Exception as exc:  # a pricing gap costs the figure, never the call
                log.warning("imgcache: pricing %s failed: %r", request.operation, exc)
                return None
        usd = as_usd(cost)
        if usd is None and cost is not None:
            log.warning("imgcache: pricing %s gave %s, not a finite number of USD; ignored",
                        request.operation, type(cost).__name__)
        return usd


def _check_inputs(request: Request) -> None:
    """Raise the error of the first input image that could not be read."""
    for image in request.inputs:
        if image.error is not None:
            raise image.error
