"""Alerts to a webhook: a JSON POST per event, sent by one background thread per webhook URL
in a process (:meth:`Alerts.for_url`: however many namespaces warn through it), retried with
backoff, never in a caller's way (a full queue drops the event, counted and logged). The log
names the webhook by its host only: its path or query may hold a token.

The URL is the operator's own configuration, never a caller's; only http(s) is accepted
(:class:`~imgcache.spend.config.Budget` checks it).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, ClassVar

log = logging.getLogger("imgcache")

QUEUE_SIZE = 100
ATTEMPTS = 4
TIMEOUT = 5.0
_BACKOFF = 1.0  # seconds before the second attempt; doubled after each


class Alerts:
    """A webhook's sender. ``sent``, ``failed`` and ``dropped`` count events."""

    _by_url: ClassVar[dict[str, Alerts]] = {}
    _made: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def for_url(cls, url: str) -> Alerts:
        """The process's sender for ``url`` (one thread per webhook, not per namespace)."""
        with cls._made:
            found = cls._by_url.get(url)
            if found is None:
                found = cls._by_url[url] = cls(url)
            return found

    def __init__(self, url: str, *, timeout: float = TIMEOUT, attempts: int = ATTEMPTS, backoff: float = _BACKOFF
                 ) -> None:
        self.url = url
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.sent = self.failed = self.dropped = 0
        self._queue: queue.Queue[bytes] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def send(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` (JSON data) for the webhook; returns at once."""
        try:
            self._queue.put_nowait(json.dumps(dict(event), sort_keys=True).encode())
        except queue.Full:
            self.dropped += 1
            log.warning("imgcache: alert queue for %s full; %s event dropped", self._host, event.get("event"))
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imgcache-alerts", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float) -> bool:
        """Whether every queued event was handled within ``timeout`` seconds (for tests and exit)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._deliver(body)
            finally:
                self._queue.task_done()

    def _deliver(self, body: bytes) -> None:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json", "User-Agent": "imgcache"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    if 200 <= answer.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {answer.status}"
            except Exception as exc:  # the webhook's trouble is logged, never raised
                problem = repr(exc)
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning("imgcache: alert webhook %s failed %d times (%s); event dropped", self._host, self.attempts,
                    problem.replace(self.url, self._host))

    @property
    def _host(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or '?'}"
