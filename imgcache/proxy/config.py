"""What the operator decides: the upstream, who shares a namespace, the limits.

A :class:`ProxyConfig` is plain data, checked when it is made (:class:`~imgcache.ConfigError`),
and travels as JSON to the worker processes of ``imgcache serve --workers N``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._vocabulary import check_namespace
from ..errors import ConfigError
from ..fetch import FetchPolicy

MiB = 1 << 20
NAMESPACE_MODES = ("shared", "per-key", "header")
DEFAULT_UPSTREAM = "https://api.openai.com/v1"
CONTROL_HEADER = "x-imgcache-control"
"""Per-request directives: ``no-cache`` (skip the lookup, store the answer), ``no-store``
(look up, store nothing), or both (a plain pass-through)."""
NAMESPACE_HEADER = "x-imgcache-namespace"
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True)
class ProxyConfig:
    """How ``imgcache serve`` answers; see the fields."""

    upstream: str = DEFAULT_UPSTREAM
    """The API the proxy stands for: ``<proxy>/v1/<path>`` is forwarded to ``<upstream>/<path>``."""
    namespace_mode: str = "per-key"
    """``per-key`` (default): one namespace per API key, named by a hash of the key, so two
    keys never see each other's entries; ``shared``: every caller in one namespace;
    ``header``: the namespace is the value of ``namespace_header`` (set by a gateway you trust)."""
    namespace: str | None = None
    """The shared namespace (``shared``), the prefix of the per-key ones (``per-key``), or the
    namespace of requests without the header (``header``; None: those pass through uncached).
    None elsewhere: the cache's own namespace (``IMGCACHE_NAMESPACE`` or ``default``)."""
    namespace_header: str = NAMESPACE_HEADER
    allow_namespace_header: tuple[str, ...] = ()
    """Namespaces (glob patterns, ``*`` for any) a caller may pick with ``namespace_header``.
    Empty: the header is refused (in ``header`` mode: any valid name is taken). In ``per-key``
    mode the picked name replaces the prefix: callers of two keys still never share."""
    max_body_bytes: int = 64 * MiB
    """Larger request bodies are refused with 413, before they are read."""
    upstream_timeout: float = 600.0
    """Seconds to wait for the upstream's answer (image generation takes up to minutes)."""
    connect_timeout: float = 10.0
    max_connections: int = 512
    """Connections to the upstream, pooled and kept alive."""
    max_namespaces: int = 256
    """Namespaces with a cache object in memory at once (least recently used closed first;
    all share one set of tier connections and one memory budget)."""
    cache_text_only: bool = False
    """Also cache chat completions and responses without images (exact match only)."""
    public_url: str | None = None
    """The proxy's address as callers reach it, for the ``url`` of cached images (default:
    the Host of each request)."""
    threads: int = 64
    """Worker threads for tier I/O, image reading and storing."""
    fetch_remote: bool = False
    """Fetch the ``http(s)`` image URLs of chat and responses calls, to key them by content (and
    send the fetched bytes upstream), within :attr:`fetch_timeout`, from public addresses only
    plus :attr:`fetch_allow`. False (default): such an image is keyed by its URL and forwarded
    as it came (the upstream fetches it); this server connects to no address a caller names."""
    fetch_allow: tuple[str, ...] = ()
    """Internal networks (``10.0.0.0/8``) and hosts (``images.corp``, ``*.corp``) that fetches
    may reach too (:class:`~imgcache.fetch.FetchPolicy`)."""
    fetch_timeout: float = 10.0
    """Seconds a fetch may take in all: connection, redirects, headers and body."""
    max_header_bytes: int = 64 * 1024
    """A request's line and headers together; larger heads are answered 431."""
    max_clients: int = 1024
    """Connections and requests in progress at once; beyond, new ones are answered 503."""
    body_timeout: float = 120.0
    """Seconds a request body may take to arrive (a slow sender is answered 408)."""
    file_url_ttl: float = 3600.0
    """Seconds a cached image's URL is served (at most its entry's lifetime)."""
    file_secret: str | None = None
    """The secret that seals cached images' URLs (default: ``IMGCACHE_PROXY_SECRET``, else one
    kept in the shared store; see :mod:`~imgcache.proxy.files`)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"upstream must be an http(s) URL, not {self.upstream!r}")
        object.__setattr__(self, "upstream", self.upstream.rstrip("/"))
        if self.namespace_mode not in NAMESPACE_MODES:
            raise ConfigError(f"namespace mode must be one of {', '.join(NAMESPACE_MODES)}, "
                              f"not {self.namespace_mode!r}")
        if self.namespace is not None:
            check_namespace(self.namespace)
            if self.namespace_mode == "per-key" and len(self.namespace) > MAX_PREFIX:
                raise ConfigError(f"a per-key namespace prefix is at most {MAX_PREFIX} characters")
        if not _HEADER_NAME.fullmatch(self.namespace_header):
            raise ConfigError(f"not a header name: {self.namespace_header!r}")
        object.__setattr__(self, "namespace_header", self.namespace_header.lower())
        object.__setattr__(self, "allow_namespace_header", tuple(self.allow_namespace_header))
        object.__setattr__(self, "fetch_allow", tuple(self.fetch_allow))
        FetchPolicy(private=False, allow=self.fetch_allow)  # ConfigError for an entry it cannot read
        for name, value in (("max_body_bytes", self.max_body_bytes), ("max_connections", self.max_connections),
                            ("max_namespaces", self.max_namespaces), ("threads", self.threads),
                            ("max_header_bytes", self.max_header_bytes), ("max_clients", self.max_clients)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, not {value!r}")
        for name, seconds in (("upstream_timeout", self.upstream_timeout),
                              ("connect_timeout", self.connect_timeout), ("fetch_timeout", self.fetch_timeout),
                              ("body_timeout", self.body_timeout), ("file_url_ttl", self.file_url_ttl)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
                raise ConfigError(f"{name} must be positive seconds, not {seconds!r}")
        if self.file_secret is not None and len(self.file_secret) < 16:
            raise ConfigError("file_secret must be at least 16 characters (e.g. 32 random bytes in hex)")
        if self.public_url is not None:
            public = urlsplit(self.public_url)
            if public.scheme not in ("http", "https") or not public.netloc:
                raise ConfigError(f"public URL must be an http(s) URL, not {self.public_url!r}")
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProxyConfig:
        fields = json.loads(text)
        for name in ("allow_namespace_header", "fetch_allow"):
            fields[name] = tuple(fields.get(name) or ())
        return cls(**fields)


KEY_SUFFIX_LEN = 22
"""``.k`` and 20 hex digits of the key's sha256: what a per-key namespace adds to its prefix."""
MAX_PREFIX = 64 - KEY_SUFFIX_LEN
