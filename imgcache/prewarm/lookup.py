"""How the prewarm job asks the cache whether a request is answered already.

The cache entry itself is the job's "done" marker: a prompt whose entry exists is finished,
whichever run or worker made it. Checking a whole input (a resumed run over thousands of
finished prompts) must not download their images, so :func:`entry_exists` reads manifests
only: the memory tier, then each byte tier's manifest, parsed and checked for expiry like a
read would. Neither function counts requests or hits in the cache's stats: a prewarm lookup
is not a caller's request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import CorruptData
from ..store.base import MISSING, entry_key
from ..store.tiered import FAILED, parse_manifest

if TYPE_CHECKING:
    from ..cache import Cache
    from ..request import Request


def entry_exists(cache: Cache, key: str) -> bool:
    """True if a valid, unexpired manifest for ``key`` is in any tier (blobs are not read)."""
    store = cache.store
    if store.get_memory(cache.namespace, key) is not None:
        return True
    ekey = entry_key(cache.namespace, key)
    now = time.time()
    for tier in store.tiers:
        raw = store.guarded(tier, tier.get, ekey)
        if raw is FAILED or raw is MISSING:
            continue
        try:
            manifest = parse_manifest(raw, key)  # type: ignore[arg-type]
        except CorruptData:
            continue
        if manifest["expires"] is None or manifest["expires"] > now:
            return True
    return False


def semantic_hit(cache: Cache, request: Request) -> bool:
    """True if a stored entry asks for the same picture in other words, as the verifier
    judges it (never cosine alone). Like a live lookup, a match is stored under the
    request's own key (an alias), so the next live call with this prompt is an exact hit.

    This is the cache's own near-match step (``Cache._near_hit``) without its stats: one
    code path decides what is "the same picture" for live calls and for prewarm alike.
    """
    if cache.semantic_options is None or request.kind != "generation":
        return False
    return cache._near_hit(request) is not None
