"""The proxy's HTTP application: a Starlette app (run by uvicorn, see :mod:`imgcache.proxy.server`).

Routes:

* ``POST /v1/images/generations``, ``/v1/images/edits``, ``/v1/chat/completions``,
  ``/v1/responses``: cached (:mod:`imgcache.proxy.calls` makes the body a request; the
  namespace's cache answers it with :meth:`Cache.afetch`: one upstream call for identical
  requests in flight, the upstream's bytes and status relayed unchanged on a miss, the stored
  JSON on a hit). Streaming calls, and bodies the cache cannot key, are forwarded uncached.
* every other ``/v1/...`` path, any method: forwarded unchanged, both ways streamed.
* ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /imgcache/files/<token>.<ext>``
  (the cached image bytes behind a hit's ``url``: see :mod:`~imgcache.proxy.files`).

Every answer carries ``x-imgcache``: ``hit; tier=<tier>; match=<match>``, ``miss``,
``bypass; reason=<why>`` (forwarded uncached) or ``error; reason=<why>``. A relayed answer
keeps the upstream's ``x-request-id``; a hit, and an error the proxy makes itself, carry one of
their own (``req_imgcache_<32 hex>``, new for each answer), so the SDKs' ``request_id`` is
never empty. Callers steer single requests with ``x-imgcache-control: no-cache`` (skip the
lookup, store the answer) and/or ``no-store`` (look up by exact key, store nothing: no entry,
no alias, no TTL renewal).

Errors: an upstream error answer is relayed with its status and body, never stored; an
upstream that cannot be reached is a 502 (504 if it does not answer in time), a body over
the limit a 413, malformed JSON on a cached endpoint the API's 400, all in the API's error
shape. The ``Authorization`` header goes upstream and nowhere else: not into keys, entries or
logs (the access log has method, path without query, status, outcome, namespace, sizes and
times).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpx
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from .. import codec
from ..errors import BudgetExceeded, CorruptData, RateLimited
from ..fetch import FetchPolicy
from ..images import sniff_type
from .answers import (
    bad_path,
    error_response,
    failure_answer,
    hit_response,
    malformed,
    over_limit,
    refused,
    relay,
    relayed,
    too_large,
    too_slow,
)
from .calls import (
    CHAT,
    EDITS,
    GENERATIONS,
    RESPONSES,
    CachedRequest,
    ImageUrl,
    Passed,
    Refused,
    dumps,
    edit,
    form_fields,
    generation_of,
    vision,
)
from .config import CONTROL_HEADER, ProxyConfig
from .files import FileRef, FileUrls, file_urls
from .metrics import Metrics
from .observe import Observe
from .tenants import NamespaceRefused, Tenants
from .upstream import (
    BodyTooLarge,
    BodyTooSlow,
    Reply,
    Upstream,
    UpstreamError,
    UpstreamFailure,
)
from .upstream import failure as _upstream_failure

if TYPE_CHECKING:
    from ..cache import Cache
    from ..manifest import Hit

log = logging.getLogger("imgcache.proxy")

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
_ESCAPING = re.compile(r"%2f|%5c|\\", re.IGNORECASE)
"""Encoded slashes and backslashes: an upstream may read them as separators."""
_MAX_FORM_FILES = 64
_MAX_FORM_FIELDS = 256
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

def _control(headers: Headers) -> frozenset[str]:
    value = headers.get(CONTROL_HEADER)
    return frozenset(token.strip().lower() for token in value.split(",")) if value else frozenset()


class Proxy:
    """The state of one app: configuration, tenants, upstream client, metrics; and the
    request handlers."""

    def __init__(self, config: ProxyConfig, cache: Cache, *, owns_cache: bool,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.cache = cache
        self.metrics = Metrics(lambda: self.tenants.open_caches(), base=cache)
        self.tenants = Tenants(cache, config, on_open=self.metrics.watch)
        self._owns_cache = owns_cache
        self._transport = transport
        self._own_headers = frozenset({CONTROL_HEADER, config.namespace_header})
        self._upstream: Upstream | None = None
        # Callers are strangers: their images are data: URLs, or http(s) URLs fetched only
        # when the operator allows it, and only from public addresses (or the allow-list).
        self.image_options = dataclasses.replace(
            cache.vision_options, read_paths=False, fetch_remote=config.fetch_remote,
            fetch_timeout=config.fetch_timeout,
            fetch_policy=FetchPolicy(private=False, allow=config.fetch_allow, queue=False))
        self._file_urls: FileUrls | None = None

    @property
    def file_urls(self) -> FileUrls:
        if self._file_urls is None:  # made on first use: the secret may live in Redis
            self._file_urls = file_urls(self.cache, self.config.file_secret)
        return self._file_urls

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the proxy app has not started (its lifespan runs the upstream client)")
        return self._upstream

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        from concurrent.futures import ThreadPoolExecutor

        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(self.config.threads, thread_name_prefix="imgcache-proxy"))
        self._upstream = Upstream(self.config, self.metrics.observe_upstream, self._transport)
        log.info("imgcache proxy: forwarding to %s, namespaces %s, tiers %s", self.config.upstream,
                 self.config.namespace_mode, "+".join(self.cache.store.tier_names))
        try:
            yield
        finally:
            try:
                await self._upstream.aclose()
                await asyncio.to_thread(self.tenants.close)
                if self._owns_cache:
                    await asyncio.to_thread(self.cache.close)
                else:
                    await asyncio.to_thread(self.cache.flush)
            finally:
                self.metrics.close()  # multiprocess: this worker's gauges leave the sums

    # -- cached endpoints ---------------------------------------------------------------------

    async def generations(self, request: HttpRequest) -> Response:
        return await self._cached(request, GENERATIONS)

    async def edits(self, request: HttpRequest) -> Response:
        return await self._cached(request, EDITS)

    async def chat(self, request: HttpRequest) -> Response:
        return await self._cached(request, CHAT)

    async def responses(self, request: HttpRequest) -> Response:
        return await self._cached(request, RESPONSES)

    async def _cached(self, request: HttpRequest, endpoint: str) -> Response:
        request.state.endpoint = endpoint
        url = self._upstream_url(request)
        if url is None:
            return bad_path()
        try:
            raw = await self._read(request)
            namespace = self.tenants.namespace(request.headers)
        except BodyTooLarge as exc:
            return too_large(exc)
        except BodyTooSlow as exc:
            return too_slow(exc)
        except NamespaceRefused as exc:
            return error_response(exc.status, f"imgcache proxy: {exc}", code=exc.code, reason="namespace")
        request.state.namespace = namespace
        headers = self.upstream.request_headers(request.headers.raw, self._own_headers)
        if namespace is None:
            return await self._pass(endpoint, url, headers, raw, "no-namespace")
        if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
            return await self._pass(endpoint, url, headers, raw, "encoded-body")
        with self.tenants.lease(namespace) as cache:
            built = await self._build(endpoint, request, raw)
            if isinstance(built, Response):
                return built
            if isinstance(built, Refused):
                return refused(built)
            if isinstance(built, Passed):
                if built.bypassed:
                    cache.stats_counters.add({"bypassed": 1})
                return await self._pass(endpoint, url, headers, raw, built.reason)
            headers = self.upstream.decodable(headers)  # an answer the proxy cannot decode it cannot store
            control = _control(request.headers)
            image_url = self._image_url(request, namespace)
            return await self._fetch(cache, built, url, headers, image_url,
                                     lookup="no-cache" not in control, store="no-store" not in control)

    async def _read(self, request: HttpRequest) -> bytes:
        """The whole body; BodyTooLarge past the limit (refused before reading when declared),
        BodyTooSlow if it takes longer than the body timeout."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        chunks = [chunk async for chunk in self._limited(request)]
        return b"".join(chunks)

    async def _build(self, endpoint: str, request: HttpRequest, raw: bytes
                     ) -> CachedRequest | Passed | Refused | Response:
        if endpoint == EDITS:
            form = await self._form(request.headers, raw)
            if form is None:
                return Passed("invalid")
            fields, images, mask = form
            return await asyncio.to_thread(edit, fields, images, mask, raw, self.image_options)
        if endpoint == GENERATIONS:
            built = generation_of(raw)
            return malformed() if built is None else built
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: a body nested thousands deep
            return malformed()
        return await asyncio.to_thread(vision, endpoint, body, raw, self.image_options,
                                       self.config.cache_text_only)

    @staticmethod
    async def _form(headers: Headers, raw: bytes) -> tuple[dict[str, Any], list[bytes], bytes | None] | None:
        """An edit's multipart form: (typed fields, input images in order, mask); None if the
        body is not a form the proxy can read (the API answers it)."""
        if not headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return None

        async def chunks() -> AsyncIterator[bytes]:
            yield raw

        parser = MultiPartParser(headers, chunks(), max_files=_MAX_FORM_FILES, max_fields=_MAX_FORM_FIELDS)
        try:
            form = await parser.parse()
        except (MultiPartException, ValueError):
            return None
        try:
            items: list[tuple[str, str | bytes]] = []
            images: list[bytes] = []
            mask = None
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    if name in ("image", "image[]"):
                        images.append(data)
                    elif name == "mask":
                        mask = data
                    else:
                        items.append((name, data))
                else:
                    items.append((name, value))
            return form_fields(items), images, mask
        finally:
            await form.close()

    def _image_url(self, request: HttpRequest, namespace: str) -> ImageUrl:
        """URLs for a hit's images (see :mod:`~imgcache.proxy.files`)."""
        def image_url(hit: Hit, index: int, image: bytes) -> str:
            base = self.config.public_url or str(request.base_url).rstrip("/")
            expires = time.time() + self.config.file_url_ttl
            if hit.manifest.get("expires") is not None:
                expires = min(expires, hit.manifest["expires"])
            ref = FileRef(namespace, hit.manifest["key"], index, int(expires))
            return f"{base}/imgcache/files/{self.file_urls.name(ref, _EXTENSIONS.get(sniff_type(image), 'bin'))}"

        return image_url

    async def _fetch(self, cache: Cache, call: CachedRequest, url: str, headers: list[tuple[bytes, bytes]],
                     image_url: ImageUrl, *, lookup: bool, store: bool) -> Response:
        """Through the cache: a hit, or one upstream call for every identical request in flight.
        The caller's ``Cache-Control: no-cache`` skips the lookup, ``no-store`` the storing."""

        async def upstream() -> Reply:
            reply = await self.upstream.call(call.endpoint, "POST", url, headers, call.content)
            if not reply.ok:
                raise UpstreamError(reply)  # counted, never stored
            return reply

        def rebuild(stored: Any, hit: Hit) -> Response:
            return hit_response(call.render(stored, hit, image_url), hit, "" if store else "; no-store")

        try:
            result = await cache.afetch(call.request, upstream, to_storable=call.to_storable, from_storable=rebuild,
                                        cost_usd=call.cost, estimate_usd=call.estimate, lookup=lookup, store=store)
        except (BudgetExceeded, RateLimited) as exc:
            return over_limit(exc)
        except UpstreamError as exc:
            return relay(exc.reply, "error; reason=upstream")
        except UpstreamFailure as exc:
            return failure_answer(exc)
        if not isinstance(result, Reply):
            return result
        if not lookup:
            return relay(result, "bypass; reason=no-cache" + ("" if store else ", no-store"))
        if call.unreadable:
            return relay(result, "bypass; reason=unreadable-image")
        return relay(result, "miss" if store else "miss; no-store")

    async def _pass(self, endpoint: str, url: str, headers: list[tuple[bytes, bytes]],
                    content: bytes | AsyncIterator[bytes], reason: str, method: str = "POST") -> Response:
        """Forward uncached; the answer is relayed as it comes."""
        try:
            upstream = await self.upstream.open(endpoint, method, url, headers, content)
        except UpstreamFailure as exc:
            return failure_answer(exc)
        except BodyTooLarge as exc:
            return too_large(exc)
        except BodyTooSlow as exc:
            return too_slow(exc)
        try:
            return await relayed(upstream, f"bypass; reason={reason}")
        except httpx.TransportError as exc:
            return failure_answer(_upstream_failure(exc, self.config.upstream))

    # -- everything else -------------------------------------------------------------------------

    async def forward(self, request: HttpRequest) -> Response:
        """Any other ``/v1`` path, any method: forwarded unchanged, both ways streamed (a
        request body without a declared length is read first, up to the limit)."""
        request.state.endpoint = "forward"
        url = self._upstream_url(request)
        if url is None:
            return bad_path()
        limit = self.config.max_body_bytes
        headers = self.upstream.request_headers(request.headers.raw, self._own_headers)
        declared = request.headers.get("content-length")
        content: bytes | AsyncIterator[bytes] = b""
        if declared is not None:  # checked now, then streamed through
            if declared.isdigit() and int(declared) > limit:
                return too_large(BodyTooLarge(limit))
            headers.append((b"content-length", declared.encode("latin-1")))
            content = self._limited(request)
        elif "chunked" in request.headers.get("transfer-encoding", "").lower():
            try:  # no length to check first: read up to the limit, so an oversized body never leaves
                content = await self._read(request)
            except BodyTooLarge as exc:
                return too_large(exc)
            except BodyTooSlow as exc:
                return too_slow(exc)
        return await self._pass("forward", url, headers, content, "endpoint", request.method)

    def _upstream_url(self, request: HttpRequest) -> str | None:
        path = _upstream_path(request)
        return None if path is None else self.upstream.url(path, request.scope.get("query_string", b""))

    async def _limited(self, request: HttpRequest) -> AsyncIterator[bytes]:
        """The body's chunks, up to the size limit (BodyTooLarge beyond) and within the body
        timeout (BodyTooSlow beyond: a slow sender holds nothing longer)."""
        limit, size = self.config.max_body_bytes, 0
        deadline = time.monotonic() + self.config.body_timeout
        stream = request.stream()
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise BodyTooSlow(self.config.body_timeout) from None
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            if chunk:
                yield chunk

    async def not_found(self, request: HttpRequest) -> Response:
        return error_response(404, f"Invalid URL ({request.method} {request.url.path}): this imgcache proxy "
                                    "serves the API under /v1", code=None, reason="not-found")

    async def healthz(self, request: HttpRequest) -> Response:
        figures = self.cache.stats()
        body = {"status": "ok", "upstream": self.config.upstream, "tiers": figures["tiers"],
                "namespace_mode": self.config.namespace_mode, "namespaces_open": self.tenants.open_count}
        return Response(dumps(body), media_type="application/json")

    async def metrics_endpoint(self, request: HttpRequest) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, headers={"content-type": content_type})

    async def file(self, request: HttpRequest) -> Response:
        """A cached image behind a hit's URL (see :mod:`~imgcache.proxy.files`), while both the
        URL and the entry live and the entry's result is not invalidated."""
        gone = error_response(404, "The requested file does not exist or its URL has expired.",
                              code=None, reason="not-found")
        ref = self.file_urls.open(request.path_params["name"])
        if ref is None:
            return gone
        with self.tenants.lease(ref.namespace) as cache:
            hit = await asyncio.to_thread(cache.entry, ref.key)
        if hit is None:
            return gone
        try:
            image = codec.decode(hit.manifest["result"], hit.blobs)["data"][ref.index]["image"]
        except (CorruptData, KeyError, IndexError, TypeError, ValueError):
            return gone
        if not isinstance(image, bytes):
            return gone
        max_age = max(0, int(ref.expires - time.time()))
        return Response(image, media_type=sniff_type(image),
                        headers={"cache-control": f"private, max-age={max_age}"})


async def _internal_error(request: HttpRequest, exc: Exception) -> Response:
    log.error("imgcache proxy: %s %s failed: %r", request.method, request.url.path, exc)
    return error_response(500, "imgcache proxy: internal error", code=None, type="server_error",
                          reason="internal")


def _upstream_path(request: HttpRequest) -> str | None:
    """The request's path after ``/v1``, as the caller sent it (percent-encoding kept); None
    if it could leave the upstream's base path: a ``.`` or ``..`` segment (plain or
    percent-encoded), an encoded slash or a backslash."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    if _ESCAPING.search(path) or any(unquote(segment) in (".", "..") for segment in path.split("/")):
        return None
    return path.removeprefix("/v1")


def create_app(config: ProxyConfig | None = None, cache: Cache | None = None, *, owns_cache: bool = False,
               transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The proxy as an ASGI app. ``cache``: the cache whose tiers every namespace uses (its
    namespace is the default one), closed with the app if ``owns_cache`` (else flushed);
    None: :meth:`Cache.from_env`, closed with the app. ``transport``: an httpx transport for
    the upstream (tests)."""
    from ..cache import Cache

    config = config or ProxyConfig()
    owns = owns_cache or cache is None
    if cache is None:
        cache = Cache.from_env()
    proxy = Proxy(config, cache, owns_cache=owns, transport=transport)
    routes = [
        Route("/healthz", proxy.healthz, methods=["GET", "HEAD"]),
        Route("/metrics", proxy.metrics_endpoint, methods=["GET"]),
        Route("/imgcache/files/{name}", proxy.file, methods=["GET", "HEAD"]),
        Route("/v1/images/generations", proxy.generations, methods=["POST"]),
        Route("/v1/images/edits", proxy.edits, methods=["POST"]),
        Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
        Route("/v1/responses", proxy.responses, methods=["POST"]),
        Route("/v1/{path:path}", proxy.forward, methods=_ALL_METHODS),
        Route("/{path:path}", proxy.not_found, methods=_ALL_METHODS),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Observe, proxy=proxy)], lifespan=proxy.lifespan,
                    exception_handlers={Exception: _internal_error})
    app.state.proxy = proxy
    return app
