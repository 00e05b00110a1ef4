"""Which namespace a request is in, and one cache object per namespace.

The operator chooses who shares entries (:attr:`ProxyConfig.namespace_mode`):

* ``per-key`` (the default): ``<prefix>.k<20 hex>``, the hex being the start of the sha256 of
  the caller's API key (the ``Authorization`` bearer token, else an ``api-key`` header). The
  key itself is never stored, logged or kept: only this hash names the namespace, so two keys
  never see each other's entries. Requests without a key share ``<prefix>.anon`` (an upstream
  that wants a key refuses them, and refusals are never stored).
* ``shared``: every caller in one namespace.
* ``header``: the namespace is the value of a header that a gateway in front sets.

A caller may pick a namespace with the namespace header only where the operator allows it
(:attr:`ProxyConfig.allow_namespace_header`); in ``per-key`` mode the picked name replaces the
prefix, so the key still separates callers.

:class:`Tenants` keeps one :class:`~imgcache.Cache` per namespace in use, made with
:meth:`Cache.for_namespace` (one set of tier connections and one memory budget for all of
them), the least recently used closed beyond ``max_namespaces`` once no request holds it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._vocabulary import check_namespace
from ..errors import ConfigError, ProxyError
from .config import MAX_PREFIX, ProxyConfig

if TYPE_CHECKING:
    from ..cache import Cache


class NamespaceRefused(ProxyError):
    """The namespace header names a namespace this caller may not use (or no valid name)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def api_key(headers: Mapping[str, str]) -> str | None:
    """The caller's credential: the bearer token of ``Authorization`` (the whole value for
    another scheme), else the ``api-key`` header (Azure's); None without either."""
    auth = (headers.get("authorization") or "").strip()
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else auth
    return (headers.get("api-key") or "").strip() or None


def key_namespace(prefix: str, key: str | None) -> str:
    """The per-key namespace of ``key`` (a hash of it, never the key) under ``prefix``."""
    if key is None:
        return check_namespace(f"{prefix}.anon")
    return check_namespace(f"{prefix}.k{hashlib.sha256(key.encode()).hexdigest()[:20]}")


@dataclass
class _Slot:
    cache: Cache
    users: int = 0


class Tenants:
    """Namespaces of requests, and their cache objects (see the module doc)."""

    def __init__(self, base: Cache, config: ProxyConfig, *, on_open: Callable[[Cache], None] | None = None) -> None:
        self.base = base
        self.on_open = on_open
        """Called with each cache object opened for a namespace (the proxy's metrics watch it)."""
        self.config = config
        self.default = config.namespace or base.namespace
        if config.namespace_mode == "per-key" and len(self.default) > MAX_PREFIX:
            raise ConfigError(f"namespace {self.default!r} is too long to prefix per-key namespaces "
                              f"(at most {MAX_PREFIX} characters)")
        self._open: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()
        self._closer = ThreadPoolExecutor(1, thread_name_prefix="imgcache-proxy-close")

    # -- which namespace ---------------------------------------------------------------------

    def namespace(self, headers: Mapping[str, str]) -> str | None:
        """The namespace of a request with these headers (lower-case names); None in
        ``header`` mode for a request without the header and no default namespace.
        Raises NamespaceRefused."""
        config = self.config
        picked = headers.get(config.namespace_header)
        if picked is not None:
            picked = self._check_pick(picked.strip())
        if config.namespace_mode == "shared":
            return picked or self.default
        if config.namespace_mode == "header":
            return picked or config.namespace
        prefix = picked or self.default
        if len(prefix) > MAX_PREFIX:
            raise NamespaceRefused(400, f"{config.namespace_header}: a per-key namespace prefix is at "
                                        f"most {MAX_PREFIX} characters", "invalid_namespace")
        return key_namespace(prefix, api_key(headers))

    def _check_pick(self, picked: str) -> str:
        config = self.config
        patterns = config.allow_namespace_header
        if config.namespace_mode != "header" and not patterns:
            raise NamespaceRefused(403, f"this proxy does not let callers pick a namespace: remove the "
                                        f"{config.namespace_header} header", "namespace_not_allowed")
        try:
            check_namespace(picked)
        except ConfigError as exc:
            raise NamespaceRefused(400, f"{config.namespace_header}: {exc}", "invalid_namespace") from None
        if patterns and not any(fnmatch.fnmatchcase(picked, pattern) for pattern in patterns):
            raise NamespaceRefused(403, f"{config.namespace_header}: namespace {picked!r} is not one "
                                        "this proxy lets callers pick", "namespace_not_allowed")
        return picked

    # -- cache objects -------------------------------------------------------------------------

    @contextmanager
    def lease(self, namespace: str) -> Iterator[Cache]:
        """The cache of ``namespace``, kept open while the block runs."""
        slot = self._acquire(namespace)
        try:
            yield slot.cache
        finally:
            with self._lock:
                slot.users -= 1
                self._evict()

    def _acquire(self, namespace: str) -> _Slot:
        with self._lock:
            slot = self._open.get(namespace)
            if slot is None:
                cache = self.base if namespace == self.base.namespace else self.base.for_namespace(namespace)
                slot = self._open[namespace] = _Slot(cache)
                if cache is not self.base and self.on_open is not None:
                    self.on_open(cache)
            else:
                self._open.move_to_end(namespace)
            slot.users += 1
            self._evict()
            return slot

    def _evict(self) -> None:
        """Close the least recently used idle caches beyond the limit (lock held)."""
        excess = len(self._open) - self.config.max_namespaces
        if excess <= 0:
            return
        for namespace, slot in list(self._open.items()):
            if excess <= 0:
                break
            if slot.users == 0 and slot.cache is not self.base:
                del self._open[namespace]
                self._closer.submit(slot.cache.close)  # flushes its stats; the tiers stay open
                excess -= 1

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_caches(self) -> list[Cache]:
        """The cache objects open now (the base one among them once it served a request)."""
        with self._lock:
            return [slot.cache for slot in self._open.values()]

    def close(self) -> None:
        """Close every namespace's cache object but the base one (its owner closes it)."""
        with self._lock:
            slots = list(self._open.values())
            self._open.clear()
        for slot in slots:
            if slot.cache is not self.base:
                self._closer.submit(slot.cache.close)
        self._closer.shutdown(wait=True)
