"""Single-flight: concurrent identical requests make one upstream call.

Two layers, used together by the cache front:

* in one process, :class:`LocalFlight` elects one leader per key among threads (or among the
  tasks of an event loop); the others wait until it has finished and then read
  the stored result (a fresh copy each) or re-raise the leader's error;
* across processes, the leader takes a Redis lock (:meth:`RedisTier.mutex`) with a short
  timeout that :class:`Heartbeat` keeps extending while the call runs, so a holder that dies
  blocks the others for at most one lock timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
