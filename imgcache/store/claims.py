"""Claims kept in a tier: which worker is doing what, so that workers sharing the tier do each
thing once in all (the prewarm job's prompts), and refusals remembered for a while.

A worker claims a key before it works on it and releases the claim when it is done. A claim
dies with its holder, so a worker that dies leaves nothing blocked:

* :class:`RedisClaims` (workers on any machines sharing a Redis): a lock per key,
  ``<prefix><ns>:<scope>:claim:{<key>}``, taken with ``SET NX PX <lease>`` (redis-py's
  ``Lock``) and renewed by a heartbeat thread every ``lease / 3``; a worker that dies stops
  renewing, and its claims expire after at most ``lease`` seconds. Refusals are strings
  ``<prefix><ns>:<scope>:refused:{<key>}`` that expire after ``refusal_ttl``.
* :class:`FileClaims` (workers on one machine sharing a directory): an exclusive ``flock`` on
  ``<root>/<ns>/<scope>/claims/<key>``. The kernel drops it when its process dies, so no lease
  is needed. Refusals are JSON files ``<root>/<ns>/<scope>/refused/<key[:2]>/<key>``.

A tier's claims raise TierError like any tier call (file claims log and go on instead: a
directory that cannot hold them must not trip the whole disk tier). The tiered store hands
them out wrapped in :class:`GuardedClaims`, which runs every call through the tier's breaker:
a failing tier lets the claim through and counts it in ``errors``, so an outage may cost a
duplicate call, never the run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._files import DEFAULT_FILE_MODE, dir_mode, make_dirs, open_file, read_file, write_file
from .._vocabulary import check_namespace
from ..errors import TierError
from ..flight import Heartbeat
from .base import FAILED

if TYPE_CHECKING:
    from .redis import RedisTier

log = logging.getLogger("imgcache")


class TierClaims(Protocol):
    """What a tier's ``claims(...)`` returns (see :class:`~imgcache.store.base.Leases`)."""

    @property
    def errors(self) -> int:
        """Failures the claims got over by themselves (counted, not raised)."""

    def claim(self, key: str) -> bool:
        """True if this worker now holds ``key``, False if another one does."""

    def release(self, key: str) -> None:
        """Give ``key`` back; never raises (a claim that cannot be given back dies anyway)."""

    def release_all(self) -> None: ...

    def refusal(self, key: str) -> str | None:
        """Why ``key`` was refused within the refusal time, or None."""

    def refuse(self, key: str, reason: str) -> None: ...

    def close(self) -> None:
        """Release every claim held."""


class RedisClaims:
    """Leased claims and expiring refusals in Redis; see the module doc. Calls raise TierError."""

    def __init__(self, tier: RedisTier, namespace: str, scope: str, *, lease: float = 30.0,
                 refusal_ttl: float = 86400.0) -> None:
        self.tier = tier
        self.lease = lease
        self.refusal_ttl = refusal_ttl
        self.errors = 0
        self._base = f"{tier.prefix}{check_namespace(namespace)}:{check_namespace(scope)}"
        self._heartbeat = Heartbeat(lease)
        self._held: dict[str, Any] = {}
        self._lock = threading.Lock()

    def claim(self, key: str) -> bool:
        name = f"{self._base}:claim:{{{key}}}"
        with self.tier.translate_errors(name):
            lock = self.tier.lock(name, self.lease)
            if not lock.acquire(blocking=False):
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
        except TierError as exc:  # expired, or Redis gone: the lease frees it
            log.debug("imgcache: releasing a claim: %r", exc)

    def release_all(self) -> None:
        with self._lock:
            keys = list(self._held)
        for key in keys:
            self.release(key)

    def refusal(self, key: str) -> str | None:
        name = f"{self._base}:refused:{{{key}}}"
        raw = self.tier.repairing(name, "string", lambda: self.tier.client.get(name))
        if raw is None:
            return None
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def refuse(self, key: str, reason: str) -> None:
        name = f"{self._base}:refused:{{{key}}}"
        ttl_ms = max(1, int(self.refusal_ttl * 1000))
        self.tier.repairing(name, "string", lambda: self.tier.client.set(name, reason.encode(), px=ttl_ms))

    def close(self) -> None:
        self.release_all()


class FileClaims:
    """``flock`` claims and refusal files under a local directory; see the module doc.
    Failures are logged and counted in ``errors``: the claim goes on as taken."""

    def __init__(self, root: Path, namespace: str, scope: str, *, refusal_ttl: float = 86400.0,
                 file_mode: int = DEFAULT_FILE_MODE) -> None:
        self.base = Path(root) / check_namespace(namespace) / check_namespace(scope)
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
            log.warning("imgcache: claim files unusable (%s); going on without", exc)
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
            log.warning("imgcache: cannot record a refusal: %s", exc)

    def close(self) -> None:
        self.release_all()


Guard = Callable[[Callable[[], Any]], Any]
"""Runs a tier call through its breaker: its result, or FAILED (see ``TieredStore.guarded``)."""


class GuardedClaims:
    """A tier's claims behind that tier's breaker, as the tiered store hands them out: a call
    that fails (or is skipped while the tier is down) trips and counts as any tier call would,
    and then lets the claim through (``errors`` counts it): a duplicate call, never a stuck run."""

    def __init__(self, claims: TierClaims, guard: Guard) -> None:
        self._claims = claims
        self._guard = guard
        self._failed = 0

    @property
    def errors(self) -> int:
        return self._failed + self._claims.errors

    def _guarded(self, op: Callable[..., Any], *args: Any) -> Any:
        result = self._guard(lambda: op(*args))
        if result is FAILED:
            self._failed += 1
        return result

    def claim(self, key: str) -> bool:
        taken = self._guarded(self._claims.claim, key)
        return True if taken is FAILED else bool(taken)

    def release(self, key: str) -> None:
        self._claims.release(key)

    def release_all(self) -> None:
        self._claims.release_all()

    def refusal(self, key: str) -> str | None:
        reason = self._guarded(self._claims.refusal, key)
        return None if reason is FAILED else reason  # type: ignore[no-any-return]

    def refuse(self, key: str, reason: str) -> None:
        self._guarded(self._claims.refuse, key, reason)

    def close(self) -> None:
        self._claims.close()
