"""The request log: a bounded, shared record of generation requests that missed the cache,
for ``imgcache prewarm --from-history N``.

:func:`record_miss` is called by the cache front once the result of an upstream call made
for a miss is stored (one line in :meth:`Cache._after_upstream`). It records the operation, the prompt as the
caller sent it, the canonical parameters and the time; never API keys or headers (they are
not part of a request), never vision requests, never prompts longer than
:data:`MAX_PROMPT_CHARS`, and never the calls the prewarm job itself makes.

Where: with Redis, a stream per namespace (``imgcache:<ns>:requests``, trimmed to about
:data:`MAX_RECORDS` records); otherwise a file in the local directory
(``<dir>/<ns>/prewarm/requests.log``), cut to its newest half when it passes
:data:`MAX_LOG_BYTES`. A log that cannot be written costs the record, never the call.

This module is imported by :mod:`imgcache.cache`: it stays light (no rich, no openai).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import append_file, read_file, write_file
from ..store.base import check_namespace

if TYPE_CHECKING:
    from ..cache import Cache
    from ..request import Request
    from ..store.disk import DiskTier
    from .inputs import PrewarmItem

log = logging.getLogger("imgcache")

FEED = "requests"
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


def record_miss(cache: Cache, request: Request) -> None:
    """Log a generation request that missed (the hook in :meth:`Cache._after_upstream`)."""
    if request.kind != "generation" or request.images or _PREWARMING.get():
        return
    prompt = request.raw_prompt or request.prompt
    if len(prompt) > MAX_PROMPT_CHARS:
        return
    try:
        tier = cache.store.shared_store()
        if tier is None:
            return
        record = json.dumps({"t": round(time.time(), 3), "op": request.operation, "k": request.key,
                             "p": prompt, "params": request.params},
                            separators=(",", ":"), ensure_ascii=False).encode()
        cache.store.guarded(tier, _append, tier, cache.namespace, record)
    except Exception as exc:  # the log is a convenience: it never costs the caller's call
        log.debug("imgcache: request log: %r", exc)


def _append(tier: Any, namespace: str, record: bytes) -> None:
    if tier.name == "disk":
        _disk_append(tier, namespace, record)
    else:
        tier.append_records(namespace, FEED, [record], MAX_RECORDS)


def _log_path(root: Path, namespace: str) -> Path:
    return Path(root) / check_namespace(namespace) / "prewarm" / "requests.log"


def _disk_append(tier: DiskTier, namespace: str, record: bytes) -> None:
    """Append under the tier's lock and file mode; what stands in the log's way is removed
    (OSError raised as TierError, like the tier's own files)."""
    path = _log_path(tier.root, namespace)

    def append() -> None:
        with tier.locked(path):
            if append_file(path, record + b"\n", tier.file_mode) > MAX_LOG_BYTES:
                data = read_file(path) or b""
                keep = data[len(data) // 2:]
                write_file(path, keep[keep.find(b"\n") + 1:], tier.file_mode)  # from a whole line

    tier.repairing(path, "appending to", append)


def _records(cache: Cache) -> Iterator[bytes]:
    tier = cache.store.shared_store()
    if tier is None:
        return
    if tier.name == "disk":
        path = _log_path(tier.root, cache.namespace)
        yield from (tier.repairing(path, "reading", lambda: read_file(path)) or b"").splitlines()
        return
    cursor: str | None = None
    while True:
        records, cursor = tier.read_records(cache.namespace, FEED, cursor)
        yield from records
        if len(records) < 10_000:
            return


@dataclass(frozen=True)
class Demand:
    """A request that missed, as the log saw it: how often in the window, when last."""

    key: str
    prompt: str
    params: dict[str, Any]
    misses: int
    last: float


def read_demand(cache: Cache, *, since: float | None = None, operation: str | None = None,
                now: float | None = None) -> list[Demand]:
    """Logged misses of the last ``since`` seconds (None: all the log holds), one per request
    key, most missed first (then most recent). Records that do not parse are skipped."""
    now = time.time() if now is None else now
    start = None if since is None else now - since
    found: dict[str, list[Any]] = {}
    for raw in _records(cache):
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


def from_history(cache: Cache, count: int, *, since: float | None = 7 * 86400.0,
                 operation: str | None = None, matching: Mapping[str, Any] | None = None
                 ) -> list[PrewarmItem]:
    """The ``count`` prompts most worth warming: those that missed most often in the last
    ``since`` seconds and are not cached now (never stored, expired or evicted), as items
    for :func:`imgcache.prewarm.prewarm`, each with the parameters it was asked with.
    ``operation`` defaults to OpenAI's images.generate; ``matching`` keeps only requests
    with these parameters (``{"model": "dall-e-3"}``)."""
    from ..adapters.openai import GENERATE_OPERATION
    from .inputs import PrewarmItem

    operation = operation or GENERATE_OPERATION
    items: list[PrewarmItem] = []
    for rank, demand in enumerate(read_demand(cache, since=since, operation=operation), 1):
        if len(items) >= count:
            break
        if matching and any(demand.params.get(k) != v for k, v in matching.items()):
            continue
        if _replayable(demand.params) and not cache.store.has_entry(cache.namespace, demand.key):
            items.append(PrewarmItem(demand.prompt, demand.params, rank, "history"))
    return items


def _replayable(value: Any) -> bool:
    """Parameters that can be sent again: no bytes (logged as their digest)."""
    if isinstance(value, dict):
        return "$sha256" not in value and all(_replayable(v) for v in value.values())
    if isinstance(value, list):
        return all(_replayable(v) for v in value)
    return True
