"""Claims: which worker is warming which prompt, so that workers given the same input
generate every prompt once in all.

A worker claims a prompt's request key before it calls upstream and releases the claim after
the result is stored (the cache entry is the "done" marker every worker checks). A prompt
claimed by another worker is left to it and looked at again later: by then it is stored,
or recorded as refused, or its claim is free again because its worker died.

* :class:`RedisClaims` (workers on any machines sharing a Redis): a lock per prompt,
  ``<prefix><ns>:prewarm:claim:{<key>}``, taken with ``SET NX PX <lease>`` (redis-py's
  ``Lock``) and renewed by a heartbeat thread every ``lease / 3``; a worker that dies stops
  renewing, and its claims expire after at most ``lease`` seconds. (A call it had in flight
  also held the cache's own flight lock, which expires after the cache's ``lock_timeout``:
  the CLI makes that no longer than the lease.)
* :class:`FileClaims` (the embedded default: workers on one machine sharing a directory): an
  exclusive ``flock`` on ``<dir>/<ns>/prewarm/claims/<key>``. The kernel drops it when its
  process dies, so no lease is needed.
* :class:`LocalClaims`: this process only (a cache with no shared tier).

They also keep *refusals*: a prompt the API refused (content policy, a bad parameter) is
recorded for ``refusal_ttl`` seconds, so that neither another worker nor a resumed run pays
for asking again.

A shared store that fails lets the claim through (counted in ``claim_errors``): a tier outage
may then cost a duplicate call, never the run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._files import DEFAULT_FILE_MODE, dir_mode, make_dirs, open_file, read_file, write_file
from ..flight import Heartbeat
from ..store.base import check_namespace
from ..store.tiered import FAILED

if TYPE_CHECKING:
    from ..cache import Cache

log = logging.getLogger("imgcache")


class Claims(Protocol):
    errors: int

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


class RedisClaims:
    """Leased claims in Redis; see the module doc."""

    def __init__(self, cache: Cache, tier: Any, *, lease: float = 30.0, refusal_ttl: float = 86400.0) -> None:
        self.cache = cache
        self.tier = tier
        self.lease = lease
        self.refusal_ttl = refusal_ttl
        self.errors = 0
        self._base = f"{tier.prefix}{cache.namespace}:prewarm"
        self._heartbeat = Heartbeat(lease)
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _guarded(self, op: Any, *args: Any) -> Any:
        def call() -> Any:
            with self.tier.translate_errors():
                return op(*args)

        result = self.cache.store.guarded(self.tier, call)
        if result is FAILED:
            self.errors += 1
        return result

    def claim(self, key: str) -> bool:
        def take() -> Any:
            lock = self.tier.lock(f"{self._base}:claim:{{{key}}}", self.lease)
            return lock if lock.acquire(blocking=False) else None

        lock = self._guarded(take)
        if lock is FAILED:
            return True
        if lock is None:
            return False
        with self._lock:
            self._held[key] = lock
        self._heartbeat.hold(lock)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            lock = self._held.pop(key, None)
        if lock is None:
            return
        self._heartbeat.drop(lock)
        try:
            with self.tier.translate_errors():
                lock.release()
        except Exception as exc:  # expired, or Redis gone: the lease frees it
            log.debug("imgcache: prewarm: releasing a claim: %r", exc)

    def release_all(self) -> None:
        with self._lock:
            keys = list(self._held)
        for key in keys:
            self.release(key)

    def refusal(self, key: str) -> str | None:
        raw = self._guarded(lambda: self.tier.client.get(f"{self._base}:refused:{{{key}}}"))
        if raw is FAILED or raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def refuse(self, key: str, reason: str) -> None:
        self._guarded(lambda: self.tier.client.set(f"{self._base}:refused:{{{key}}}", reason.encode(),
                                                   px=max(1, int(self.refusal_ttl * 1000))))

    def close(self) -> None:
        self.release_all()


class FileClaims:
    """``flock`` claims and refusal files under the local cache directory; see the module doc."""

    def __init__(self, root: Path, namespace: str, *, refusal_ttl: float = 86400.0,
                 file_mode: int = DEFAULT_FILE_MODE) -> None:
        self.base = Path(root) / check_namespace(namespace) / "prewarm"
        self.refusal_ttl = refusal_ttl
        self.file_mode = file_mode
        self.errors = 0
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        path = self.base / "claims" / key
        try:
            make_dirs(path.parent, dir_mode(self.file_mode))
            while True:
                fd = open_file(path, os.O_RDWR | os.O_CREAT, self.file_mode)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                        return False
                    raise
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:  # not a file its holder unlinked while we waited for it
                    break
                os.close(fd)
        except OSError as exc:
            self.errors += 1
            log.warning("imgcache: prewarm: claim files unusable (%s); going on without", exc)
            return True
        with self._lock:
            self._held[key] = fd
        return True

    def release(self, key: str) -> None:
        with self._lock:
            fd = self._held.pop(key, None)
        if fd is None:
            return
        try:
            (self.base / "claims" / key).unlink(missing_ok=True)  # unlinked before unlocked
        except OSError:
            pass
        os.close(fd)

    def release_all(self) -> None:
        with self._lock:
            keys = list(self._held)
        for key in keys:
            self.release(key)

    def refusal(self, key: str) -> str | None:
        path = self.base / "refused" / key[:2] / key
        try:
            data = json.loads(read_file(path) or b"null")
            if data["until"] > time.time():
                return str(data["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def refuse(self, key: str, reason: str) -> None:
        path = self.base / "refused" / key[:2] / key
        try:
            record = {"reason": reason, "until": time.time() + self.refusal_ttl}
            write_file(path, json.dumps(record).encode(), self.file_mode)
        except OSError as exc:
            self.errors += 1
            log.warning("imgcache: prewarm: cannot record a refusal: %s", exc)

    def close(self) -> None:
        self.release_all()


def claims_for(cache: Cache, *, lease: float, refusal_ttl: float) -> Claims:
    """Redis claims if the cache has Redis, else flock claims in its directory, else local."""
    redis = cache.store.available("redis")
    if redis is not None:
        return RedisClaims(cache, redis, lease=lease, refusal_ttl=refusal_ttl)
    disk = cache.store.available("disk")
    if disk is not None:
        return FileClaims(disk.root, cache.namespace,  # type: ignore[attr-defined]
                          refusal_ttl=refusal_ttl, file_mode=disk.file_mode)  # type: ignore[attr-defined]
    return LocalClaims(refusal_ttl)
