"""The upstream API: requests forwarded over pooled connections, answers relayed as they came.

Request headers go through unchanged except the hop-by-hop ones, ``Host`` (the upstream's)
and ``Content-Length`` (recomputed for the body sent); httpx's own default headers are
removed, so the upstream sees the caller's ``User-Agent``, ``Accept`` and ``Accept-Encoding``.
Answers are relayed as raw bytes with their own ``Content-Encoding``, so a compressed answer
reaches the caller byte for byte; the proxy decodes a copy only to store it.

A non-2xx answer is raised as :class:`UpstreamError` inside the cache's call (so it is counted
as an upstream error and never stored) and then relayed as it came. An upstream that cannot be
reached, or does not answer in time, is an :class:`UpstreamFailure` (502, 504).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx

from ..errors import ProxyError, UnstorableResult
from .config import ProxyConfig

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
_UNPARSED = object()


class UpstreamFailure(ProxyError):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    maybe_billed = True
    """No answer came: the call may have been carried out (a budget keeps its estimate)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BodyTooLarge(ProxyError):
    """A request body over the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this proxy's limit of {limit:,} bytes")
        self.limit = limit


class BodyTooSlow(ProxyError):
    """A request body that did not arrive within the body timeout (408)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout:g} s")
        self.timeout = timeout


@dataclass
class Reply:
    """A buffered upstream answer, exactly as it came (hop-by-hop headers removed)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    raw: bytes
    """The body as sent, still content-encoded if it was."""
    elapsed: float
    _parsed: Any = field(default=_UNPARSED, repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self) -> Any:
        """The decoded body parsed as JSON (parsed once: what the cache prices and stores);
        UnstorableResult if it is not JSON."""
        if self._parsed is _UNPARSED:
            body = self.raw
            encoding = self.header(b"content-encoding")
            try:
                if encoding and encoding.strip().lower() != b"identity":
                    body = httpx.Response(self.status, headers=[(b"content-encoding", encoding)],
                                          content=body).content
                self._parsed = json.loads(body)
            except (httpx.DecodingError, ValueError) as exc:
                raise UnstorableResult(f"the upstream's answer is not JSON: {exc}") from exc
        return self._parsed


class UpstreamError(ProxyError):
    """A non-2xx upstream answer: raised inside the cache's call, relayed unchanged."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"upstream answered {reply.status}")
        self.reply = reply

    @property
    def status_code(self) -> int:
        """The upstream's status, where the OpenAI SDK's errors keep it (for ``classify``)."""
        return self.reply.status

    @property
    def response(self) -> Any:
        """The upstream's headers, shaped like an SDK error's response (``Retry-After``)."""
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in self.reply.headers}
        return SimpleNamespace(status_code=self.reply.status, headers=headers)


def relayed_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Response headers to relay: all but the hop-by-hop ones."""
    return [(k, v) for k, v in raw if k.lower().decode("latin-1") not in HOP_BY_HOP]


class Upstream:
    """Forwards requests to ``config.upstream`` with one pooled ``httpx.AsyncClient``;
    ``observe(endpoint, seconds)`` is told how long each answer took (to its headers, for
    a streamed one)."""

    def __init__(self, config: ProxyConfig, observe: Callable[[str, float], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = config.upstream
        self._observe = observe or (lambda endpoint, seconds: None)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.upstream_timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=min(config.max_connections, 128),
                                keepalive_expiry=30.0),
            follow_redirects=False,
            transport=transport,
        )
        for name in list(self.client.headers):  # httpx's defaults: the caller's own go instead
            del self.client.headers[name]

    def url(self, path: str, query: bytes) -> str:
        """The upstream URL of ``path`` (the part after the proxy's ``/v1``)."""
        url = self.base + path
        return f"{url}?{query.decode('latin-1')}" if query else url

    @staticmethod
    def request_headers(raw: Iterable[tuple[bytes, bytes]], drop: frozenset[str] = frozenset()
                        ) -> list[tuple[bytes, bytes]]:
        """The caller's headers to forward: all but hop-by-hop ones (and those the caller's
        ``Connection`` header names), ``Host``, ``Content-Length`` and ``drop`` (the proxy's own)."""
        raw = list(raw)
        named = {token.strip().lower() for k, v in raw if k.lower() == b"connection"
                 for token in v.decode("latin-1").split(",")}
        skip = _NOT_FORWARDED | drop | named
        return [(k, v) for k, v in raw if k.lower().decode("latin-1") not in skip]

    @staticmethod
    def decodable(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` with ``Accept-Encoding`` narrowed to the encodings the proxy can decode
        (to store the answer): gzip, deflate, and br or zstd where their packages are
        installed. What comes back is still relayed byte for byte, in an encoding the caller
        asked for."""
        out = []
        for name, value in headers:
            if name.lower() == b"accept-encoding":
                offered = [token for token in value.decode("latin-1").split(",")
                           if token.split(";")[0].strip().lower() in _decoders()]
                if not offered:
                    continue
                value = ",".join(offered).strip().encode("latin-1")
            out.append((name, value))
        return out

    async def call(self, endpoint: str, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   content: bytes) -> Reply:
        """Send a request and read the whole answer (raw bytes)."""
        started = time.perf_counter()
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            response = await self.client.send(request, stream=True)
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise failure(exc, self.base) from None
        elapsed = time.perf_counter() - started
        self._observe(endpoint, elapsed)
        return Reply(response.status_code, relayed_headers(response.headers.raw), raw, elapsed)

    async def open(self, endpoint: str, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes]) -> httpx.Response:
        """Send a request and return the answer once its headers are in; the caller reads
        ``aiter_raw()`` and closes it."""
        started = time.perf_counter()
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            response = await self.client.send(request, stream=True)
        except (BodyTooLarge, BodyTooSlow):
            raise
        except httpx.TransportError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (BodyTooLarge, BodyTooSlow)):
                raise cause from None
            raise failure(exc, self.base) from None
        self._observe(endpoint, time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        await self.client.aclose()


@functools.lru_cache(maxsize=1)
def _decoders() -> frozenset[str]:
    found = {"gzip", "deflate", "identity"}
    if importlib.util.find_spec("brotli") or importlib.util.find_spec("brotlicffi"):
        found.add("br")
    if importlib.util.find_spec("zstandard"):
        found.add("zstd")
    return frozenset(found)


def failure(exc: httpx.TransportError, base: str) -> UpstreamFailure:
    """The UpstreamFailure (502 or 504) of a transport error."""
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return UpstreamFailure(504, f"imgcache proxy: the upstream {base} did not answer in time "
                                    f"({type(exc).__name__})", "upstream_timeout")
    return UpstreamFailure(502, f"imgcache proxy: the upstream {base} could not be reached "
                                f"({type(exc).__name__}: {exc})", "upstream_unreachable")
