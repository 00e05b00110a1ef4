"""The proxy's observation of every request: in-flight gauge, request metrics by endpoint and
outcome (read from the answer's ``x-imgcache``), and one JSON access-log line per request
(method, path without query, status, outcome, namespace, sizes, times, request ids; never a
header or a key)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .app import Proxy

access_log = logging.getLogger("imgcache.proxy.access")


class Observe:
    """ASGI middleware: in-flight gauge, request metrics by endpoint and outcome (read from
    the answer's ``x-imgcache``), and one structured access-log line per request."""

    def __init__(self, app: ASGIApp, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.proxy.metrics
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status, sent, outcome, request_id = 0, 0, "", ""

        async def observed(message: Message) -> None:
            nonlocal status, sent, outcome, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-imgcache":
                        outcome = value.decode("latin-1")
                    elif name == b"x-request-id":
                        request_id = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed)
        except BaseException:
            status = status or 500
            outcome = outcome or "error; reason=internal"
            raise
        finally:
            metrics.in_flight.dec()
            metrics.settled()
            elapsed = time.perf_counter() - started
            endpoint = state.get("endpoint", "proxy")
            kind, details = _outcome(outcome, status) if outcome or endpoint != "proxy" else ("local", {})
            if endpoint != "proxy":
                metrics.answered(endpoint, kind, elapsed, details.get("tier"), details.get("match"))
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(json.dumps({
                    "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "method": scope.get("method"), "path": scope.get("path"), "status": status,
                    "outcome": kind, **details, "endpoint": endpoint, "namespace": state.get("namespace"),
                    "ms": round(elapsed * 1000, 3), "bytes_out": sent,
                    "client": (scope.get("client") or ("", 0))[0],
                    **({_request_id_field(kind, details): request_id} if request_id else {}),
                }, separators=(",", ":")))


def _request_id_field(kind: str, details: dict[str, str]) -> str:
    """The access log's name for an answer's ``x-request-id``: ``request_id`` for an answer the
    proxy made (a hit, its own error), ``upstream_request_id`` for one it relayed."""
    own = kind == "hit" or (kind == "error" and details.get("reason") != "upstream")
    return "request_id" if own else "upstream_request_id"


def _outcome(header: str, status: int) -> tuple[str, dict[str, str]]:
    """``"hit; tier=disk; match=exact"`` -> ``("hit", {"tier": "disk", "match": "exact"})``."""
    if not header:
        return ("error" if status >= 500 else "bypass"), {}
    kind, *params = (part.strip() for part in header.split(";"))
    details = {}
    for param in params:
        name, sep, value = param.partition("=")
        if sep:
            details[name] = value
    return kind, details
