"""The request log: a bounded, shared record of generation requests that missed the cache,
read by ``imgcache prewarm --from-history N`` (:func:`imgcache.prewarm.from_history`).

The front announces every result it stores after an upstream call (``Cache.on_stored``);
:meth:`RequestLog.record` is one of those listeners. It records the operation, the prompt as
the caller sent it, the canonical parameters and the time; never API keys or headers (they
are not part of a request), never vision requests, never prompts longer than
:data:`MAX_PROMPT_CHARS`, and never the calls the prewarm job itself makes (:func:`prewarming`).

Where: the store's shared log (see :class:`~imgcache.store.base.SharedFeeds`): with Redis a
stream per namespace trimmed to about :data:`MAX_RECORDS` records, otherwise a file in the
local directory cut to its newest half past :data:`MAX_LOG_BYTES`. A log that cannot be
written costs the record, never the call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._vocabulary import compact_json

if TYPE_CHECKING:
    from .request import Request
    from .store.tiered import TieredStore

log = logging.getLogger("imgcache")

LOG = "requests"
MAX_RECORDS = 100_000
"""Records kept in the Redis stream (approximately: trimming is by whole stream nodes)."""
MAX_LOG_BYTES = 32 << 20
"""Size past which the local log file is cut to its newest half."""
MAX_PROMPT_CHARS = 4000
"""Longer prompts are not logged (a cut prompt would be another request)."""

_PREWARMING: ContextVar[bool] = ContextVar("imgcache_prewarming", default=False)


@contextlib.contextmanager
def prewarming() -> Iterator[None]:
    """Calls made inside the block (this thread or task) are the prewarm job's: not logged."""
    token = _PREWARMING.set(True)
    try:
        yield
    finally:
        _PREWARMING.reset(token)


@dataclass(frozen=True)
class Demand:
    """A request that missed, as the log saw it: how often in the window, when last."""

    key: str
    prompt: str
    params: dict[str, Any]
    misses: int
    last: float


class RequestLog:
    """One namespace's log of stored misses."""

    def __init__(self, store: TieredStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def record(self, request: Request, manifest: dict[str, Any]) -> None:
        """Log a generation request whose upstream result was just stored."""
        if request.kind != "generation" or request.images or _PREWARMING.get():
            return
        prompt = request.raw_prompt or request.prompt
        if len(prompt) > MAX_PROMPT_CHARS:
            return
        try:
            record = compact_json({"t": round(time.time(), 3), "op": request.operation, "k": request.key,
                                   "p": prompt, "params": request.params})
            self.store.append_log(self.namespace, LOG, record, max_records=MAX_RECORDS,
                                  max_bytes=MAX_LOG_BYTES)
        except Exception as exc:  # the log is a convenience: it never costs the caller's call
            log.debug("imgcache: request log: %r", exc)

    def records(self) -> list[bytes]:
        return self.store.read_log(self.namespace, LOG)

    def demand(self, *, since: float | None = None, operation: str | None = None,
               now: float | None = None) -> list[Demand]:
        """Logged misses of the last ``since`` seconds (None: all the log holds), one per
        request key, most missed first (then most recent). Records that do not parse are
        skipped."""
        now = time.time() if now is None else now
        start = None if since is None else now - since
        found: dict[str, list[Any]] = {}
        for raw in self.records():
            try:
                data = json.loads(raw)
                at, op, key, prompt, params = data["t"], data["op"], data["k"], data["p"], data["params"]
                if not (isinstance(at, (int, float)) and isinstance(key, str) and isinstance(prompt, str)
                        and isinstance(params, dict) and isinstance(op, str)):
                    continue
            except (ValueError, KeyError, TypeError):
                continue
            if (start is not None and at < start) or (operation is not None and op != operation):
                continue
            seen = found.get(key)
            if seen is None:
                found[key] = [prompt, params, 1, at]
            else:
                seen[2] += 1
                if at >= seen[3]:
                    seen[0], seen[1], seen[3] = prompt, params, at
        demand = [Demand(key, prompt, params, count, last) for key, (prompt, params, count, last) in found.items()]
        demand.sort(key=lambda d: (-d.misses, -d.last))
        return demand
