"""uvicorn's httptools protocol with the request head bounded (httptools itself has no limit).

A caller could otherwise send a 16 MiB header (answered 200), or hold connections open with
unfinished heads that the parser keeps buffering. Here, per request:

* the head (request line and headers) is at most ``max_head_bytes`` (uvicorn's
  ``h11_max_incomplete_event_size`` option, which means the same for its h11 protocol; set from
  :attr:`ProxyConfig.max_header_bytes`): beyond it the answer is 431 (414 for the URL alone) and
  the connection is closed. The parser buffers at most that plus one socket read;
* at most :data:`MAX_HEADERS` header fields;
* the head must arrive within uvicorn's ``timeout_keep_alive`` of its first byte (or of the
  connection, for one that sends nothing; the same time an idle kept-alive connection gets):
  a slow sender gets 408 and is disconnected.

The number of connections is bounded by uvicorn's ``limit_concurrency`` (503 beyond), and a slow
body by the app's own deadline (:attr:`ProxyConfig.body_timeout`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import ProxyError

MAX_HEADERS = 100
DEFAULT_HEAD_BYTES = 64 * 1024
_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class _HeadRefused(ProxyError):
    """Raised from a parser callback: httptools stops, uvicorn calls ``send_400_response``."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module doc. Selected with ``uvicorn.Config(http=BoundedHttpToolsProtocol)``."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_HEAD_BYTES
        self.head_timeout = float(config.timeout_keep_alive)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refusal = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._header_count = True, 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_head_bytes:
            self._refusal = 414
            raise _HeadRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._refusal = 431
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, status: int) -> None:
        """Answer ``status`` (with ``connection: close``) and close the connection."""
        body = _REASONS[status] + b"\n"
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, _REASONS[status], len(body), body))
        self.transport.close()
        self.logger.info("imgcache proxy: request refused with %d (%s)", status, _REASONS[status].decode())

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408)
