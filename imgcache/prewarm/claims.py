"""Claims: which worker is warming which prompt, so that workers given the same input
generate every prompt once in all.

A worker claims a prompt's request key before it calls upstream and releases the claim after
the result is stored (the cache entry is the "done" marker every worker checks). A prompt
claimed by another worker is left to it and looked at again later: by then it is stored,
or recorded as refused, or its claim is free again because its worker died.

The claims shared between workers are the store's (:meth:`Cache.claims
<imgcache.cache.Cache.claims>`, under the name ``prewarm``; see ``imgcache/store/claims.py``):
leased Redis locks for workers on any machines sharing a Redis, ``flock`` files for workers
on one machine sharing a directory. (A call a Redis worker had in flight when it died also
held the cache's own flight lock, which expires after the cache's ``lock_timeout``: the CLI
makes that no longer than the lease.) :class:`LocalClaims` serves a cache with no shared tier.

They also keep *refusals*: a prompt the API refused (content policy, a bad parameter) is
recorded for ``refusal_ttl`` seconds, so that neither another worker nor a resumed run pays
for asking again.

A shared store that fails lets the claim through (counted in ``errors``): a tier outage may
then cost a duplicate call, never the run.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..cache import Cache

SCOPE = "prewarm"
"""The name the job's claims go under in the store (a part of their Redis keys and paths)."""


class Claims(Protocol):
    @property
    def errors(self) -> int:
        """Failures of the shared store that let a claim through (see the module doc)."""

    def claim(self, key: str) -> bool:
        """True if this worker now holds ``key`` (or the store failed: see the module doc)."""

    def release(self, key: str) -> None: ...

    def release_all(self) -> None: ...

    def refusal(self, key: str) -> str | None:
        """Why the API refused ``key`` recently, or None."""

    def refuse(self, key: str, reason: str) -> None: ...

    def close(self) -> None: ...


class LocalClaims:
    """Claims and refusals of this process only."""

    def __init__(self, refusal_ttl: float = 86400.0) -> None:
        self.errors = 0
        self.refusal_ttl = refusal_ttl
        self._held: set[str] = set()
        self._refused: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        with self._lock:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def release_all(self) -> None:
        with self._lock:
            self._held.clear()

    def refusal(self, key: str) -> str | None:
        with self._lock:
            found = self._refused.get(key)
        return found[1] if found is not None and found[0] > time.time() else None

    def refuse(self, key: str, reason: str) -> None:
        with self._lock:
            self._refused[key] = (time.time() + self.refusal_ttl, reason)

    def close(self) -> None:
        self.release_all()


def claims_for(cache: Cache, *, lease: float, refusal_ttl: float) -> Claims:
    """The claims the cache's store shares (Redis, else its directory), else this process's."""
    shared = cache.claims(SCOPE, lease=lease, refusal_ttl=refusal_ttl)
    return shared if shared is not None else LocalClaims(refusal_ttl)
