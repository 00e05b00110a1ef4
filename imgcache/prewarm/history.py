"""``imgcache prewarm --from-history N``: the prompts most worth warming, from the request
log the cache front keeps (see :mod:`imgcache.request_log`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..cache import Cache
    from .inputs import PrewarmItem


def from_history(cache: Cache, count: int, *, since: float | None = 7 * 86400.0,
                 operation: str | None = None, matching: Mapping[str, Any] | None = None
                 ) -> list[PrewarmItem]:
    """The ``count`` prompts most worth warming: those that missed most often in the last
    ``since`` seconds and are not cached now (never stored, expired or evicted), as items
    for :func:`imgcache.prewarm.prewarm`, each with the parameters it was asked with.
    ``operation`` defaults to OpenAI's images.generate; ``matching`` keeps only requests
    with these parameters (``{"model": "dall-e-3"}``)."""
    from ..adapters.openai.wire import GENERATE_OPERATION
    from .inputs import PrewarmItem

    operation = operation or GENERATE_OPERATION
    items: list[PrewarmItem] = []
    for rank, demand in enumerate(cache.request_log.demand(since=since, operation=operation), 1):
        if len(items) >= count:
            break
        if matching and any(demand.params.get(k) != v for k, v in matching.items()):
            continue
        if _replayable(demand.params) and not cache.contains_key(demand.key):
            items.append(PrewarmItem(demand.prompt, demand.params, rank, "history"))
    return items


def _replayable(value: Any) -> bool:
    """Parameters that can be sent again: no bytes (logged as their digest)."""
    if isinstance(value, dict):
        return "$sha256" not in value and all(_replayable(v) for v in value.values())
    if isinstance(value, list):
        return all(_replayable(v) for v in value)
    return True
