"""Single-flight: concurrent identical requests make one upstream call.

Three layers, used together by the cache front:

* in one process, :class:`LocalFlight` elects one leader per key among threads (or among the
  tasks of an event loop); the others wait until it has finished and then read
  the stored result (a fresh copy each) or re-raise the leader's error;
* in one process, :class:`SimilarFlights` lets a request that asks for the same thing as one
  in flight in other words (a semantic match) wait for it too;
* across processes, the leader takes the store's lock on the entry (:class:`SharedLocks`:
  Redis, where configured) with a short timeout that :class:`Heartbeat` keeps extending while
  the call runs, so a holder that dies blocks the others for at most one lock timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._vocabulary import Sentinel
from .store.base import FAILED

if TYPE_CHECKING:
    from .store.tiered import TieredStore

log = logging.getLogger("imgcache")


@dataclass
class Flight:
    """One leader's call, as its followers see it."""

    done: Any
    """A ``threading.Event`` or an ``asyncio.Event``, set when the leader has finished."""
    error: BaseException | None = None


class LocalFlight:
    """Leader election per key among the threads of one process (``threading.Event``), or
    among the tasks of each event loop (``LocalFlight(asyncio.Event, per_loop=True)``)."""

    def __init__(self, event_type: Callable[[], Any] = threading.Event, *, per_loop: bool = False) -> None:
        self._event_type = event_type
        self._per_loop = per_loop
        self._lock = threading.Lock()
        self._flights: dict[tuple[Any, str], Flight] = {}

    @contextmanager
    def lead(self, key: str) -> Iterator[Flight | None]:
        """Yield None to the leader, or the leader's :class:`Flight` to a follower (which
        should wait on ``done``). The leader's exception, if any, is recorded for followers."""
        slot = (asyncio.get_running_loop() if self._per_loop else None, key)
        with self._lock:
            flight = self._flights.get(slot)
            leader = flight is None
            if leader:
                flight = self._flights[slot] = Flight(self._event_type())
        assert flight is not None
        if not leader:
            yield flight
            return
        try:
            yield None
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[slot]
            flight.done.set()


class Pending:
    """A leader's call that others wait for, from threads or event loops alike."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self) -> None:
        with self._lock:
            self._done.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    async def wait_async(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return True
            self._futures.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SimilarFlights:
    """Calls in flight by scope, so that a request asking for the same thing as one in flight in
    other words (a paraphrase) waits for that call instead of making its own: single-flight by
    meaning, in one process. ``same(new, leader)`` decides; it runs under a lock, so that of
    two similar requests arriving together exactly one leads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[str, dict[str, tuple[Any, Pending]]] = {}

    @contextmanager
    def lead_or_join(self, scope: str, key: str, item: Any,
                     same: Callable[[Any, Any], bool]) -> Iterator[Pending | None]:
        """Yield the :class:`Pending` call of a similar request in flight (wait for it, then
        look the result up), or None: this request is in flight under ``key`` until the block
        ends (its result should be stored by then)."""
        with self._lock:
            flights = self._scopes.setdefault(scope, {})
            found = next((pending for other_key, (other, pending) in flights.items()
                          if other_key != key and same(item, other)), None)
            if found is None:
                mine = Pending()
                flights[key] = (item, mine)
        if found is not None:
            yield found
            return
        try:
            yield None
        finally:
            with self._lock:
                if flights.get(key, (None, None))[1] is mine:
                    del flights[key]
                if not flights:
                    self._scopes.pop(scope, None)
            mine.finish()


class Heartbeat:
    """Extends every held Redis lock every ``timeout / 3`` seconds, on one daemon thread."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._locks: set[Any] = set()
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._thread: threading.Thread | None = None

    def hold(self, lock: Any) -> None:
        with self._mutex:
            self._locks.add(lock)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="imgcache-heartbeat", daemon=True)
                self._thread.start()

    def drop(self, lock: Any) -> None:
        with self._mutex:
            self._locks.discard(lock)

    def _run(self) -> None:
        while True:
            with self._mutex:
                self._wake.wait(self.timeout / 3)
                locks = list(self._locks)
                if not locks:
                    self._thread = None
                    return
            for lock in locks:
                try:
                    lock.extend(self.timeout, replace_ttl=True)
                except Exception as exc:  # lost or Redis down: the call goes on without it
                    log.debug("imgcache: could not extend flight lock: %r", exc)
                    self.drop(lock)


WAIT = Sentinel("WAIT")
"""What :meth:`SharedLocks.try_take` returns while another process holds the lock."""


class SharedLocks:
    """The cross-process layer: a lock per entry, kept alive by a :class:`Heartbeat` while its
    call runs. Where the store has no such locks (or they fail) the call goes on without."""

    def __init__(self, store: TieredStore, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._heartbeat = Heartbeat(timeout)

    def try_take(self, namespace: str, key: str) -> Any:
        """The lock if it was free (now held), WAIT if another process holds it, or None
        where there is no lock to take."""
        lock = self.store.try_mutex(namespace, key, self.timeout)
        if lock is FAILED:
            return None
        if lock is None:
            return WAIT
        self._heartbeat.hold(lock)
        return lock

    def release(self, lock: Any) -> None:
        if lock is None or lock is WAIT:
            return
        self._heartbeat.drop(lock)
        try:
            lock.release()
        except Exception as exc:  # expired or Redis gone: its timeout frees it
            log.debug("imgcache: releasing flight lock: %r", exc)
