"""``imgcache serve``: an OpenAI-compatible caching proxy, for clients in any language.

A client changes only its base URL (``OPENAI_BASE_URL=http://localhost:8787/v1``); the proxy
answers repeats from the cache and forwards the rest::

    caller ──HTTP──► app (Starlette on uvicorn) ── Observe: in-flight, metrics, access log
                      │
                      ├─ cached endpoints ─► calls: body ─► Request (the SDK wrapper's builders)
                      │   POST /v1/images/generations, /v1/images/edits,
                      │   /v1/chat/completions, /v1/responses (with images)
                      │        tenants: namespace of the caller ─► its Cache (shared tiers)
                      │        Cache.afetch: hit ─► stored JSON      miss ─► upstream, bytes
                      │                                                 relayed, stored
                      ├─ every other /v1 path, streaming calls ─► upstream, streamed both ways
                      └─ /healthz, /metrics, /imgcache/files/... (cached image URLs)

| module | job |
| --- | --- |
| :mod:`~imgcache.proxy.config` | :class:`ProxyConfig`: upstream, namespace mode, limits |
| :mod:`~imgcache.proxy.tenants` | which namespace a request is in; one cache object per namespace |
| :mod:`~imgcache.proxy.calls` | a cached endpoint's body as a request, its stored and rendered forms |
| :mod:`~imgcache.proxy.upstream` | forwarding over pooled connections, relaying answers byte for byte |
| :mod:`~imgcache.proxy.app` | the Starlette app: routes and handlers |
| :mod:`~imgcache.proxy.answers` | the proxy's own answers: the API's error shape, relays, hits |
| :mod:`~imgcache.proxy.files` | sealed, expiring URLs of cached images |
| :mod:`~imgcache.proxy.observe` | in-flight, metrics and the JSON access log of every request |
| :mod:`~imgcache.proxy.metrics` | Prometheus metrics (multiprocess under ``--workers``) |
| :mod:`~imgcache.proxy.protocol` | uvicorn's httptools protocol with the request head bounded |
| :mod:`~imgcache.proxy.server` | :func:`serve` (uvicorn) and :class:`ProxyServer` (a thread, for tests) |

Needs ``pip install 'imgcache[proxy]'``. Names are imported on first use: ``import imgcache``
and ``imgcache --help`` never load Starlette or uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

__all__ = ["ProxyConfig", "ProxyServer", "create_app", "serve"]

_LAZY = {
    "ProxyConfig": "imgcache.proxy.config",
    "ProxyServer": "imgcache.proxy.server",
    "serve": "imgcache.proxy.server",
    "create_app": "imgcache.proxy.app",
}

if TYPE_CHECKING:
    from .app import create_app
    from .config import ProxyConfig
    from .server import ProxyServer, serve


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
