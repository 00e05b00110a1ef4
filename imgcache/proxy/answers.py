"""The proxy's own answers: the API's error shape, relayed upstream answers, hits.

Every answer the proxy makes itself carries ``x-imgcache`` (what happened) and an
``x-request-id`` of its own (``req_imgcache_<32 hex>``); a relayed answer keeps the upstream's
status, headers and bytes.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import TYPE_CHECKING

import httpx
from starlette.responses import Response, StreamingResponse

from ..errors import BudgetExceeded, RateLimited
from .calls import Refused, dumps
from .upstream import BodyTooLarge, BodyTooSlow, Reply, UpstreamFailure, relayed_headers

if TYPE_CHECKING:
    from ..manifest import Hit

MALFORMED_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    "If you have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)"
)
BUFFERED_RELAY = 256 * 1024
"""Answers of declared length up to this are relayed in one piece; others (and streams) as they come."""


OWN_REQUEST_ID = "req_imgcache_"
"""The prefix of the ``x-request-id`` of the answers the proxy makes (hits, its own errors)."""


def request_id() -> str:
    """A fresh id for an answer the proxy makes: ``req_imgcache_`` and 128 random bits in hex."""
    return OWN_REQUEST_ID + secrets.token_hex(16)


def error_response(status: int, message: str, *, code: str | None, reason: str,
                   type: str = "invalid_request_error", param: str | None = None) -> Response:
    """An answer in the API's error shape, made by the proxy."""
    body = dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
    return Response(body, status_code=status, media_type="application/json",
                    headers={"x-imgcache": f"error; reason={reason}", "x-request-id": request_id(),
                             "date": formatdate(usegmt=True)})


def malformed() -> Response:
    return error_response(400, MALFORMED_JSON, code=None, reason="malformed-json")


def refused(refused: Refused) -> Response:
    return error_response(400, refused.message, code=refused.code, reason=refused.reason)


def too_slow(exc: BodyTooSlow) -> Response:
    return error_response(408, f"imgcache proxy: {exc}", code="request_timeout", reason="too-slow")


def bad_path() -> Response:
    return error_response(400, "imgcache proxy: the path has a dot segment, an encoded slash or a "
                               "backslash; not forwarded", code="invalid_path", reason="bad-path")


def failure_answer(exc: UpstreamFailure) -> Response:
    return error_response(exc.status, str(exc), code=exc.code, type="upstream_error",
                          reason=exc.code.replace("_", "-"))


def too_large(exc: BodyTooLarge) -> Response:
    return error_response(413, f"imgcache proxy: {exc}", code="request_too_large", reason="too-large")


def over_limit(exc: BudgetExceeded | RateLimited) -> Response:
    """429 in the API's error shape, with ``Retry-After``: until the budget's window resets,
    or until the call's turn under the rate limits."""
    if isinstance(exc, RateLimited):
        response = error_response(429, f"imgcache proxy: {exc}", code="rate_limit_exceeded", type="requests",
                                  reason="queue-timeout")
    else:
        response = error_response(429, f"imgcache proxy: {exc}", code="budget_exceeded", type="insufficient_quota",
                                  reason="budget")
    if exc.retry_after is not None:
        response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def relay(reply: Reply, outcome: str) -> Response:
    """The upstream's buffered answer as it came: status, headers, raw bytes."""
    response = Response(status_code=reply.status)
    response.body = reply.raw
    headers = list(reply.headers)
    if not any(name.lower() == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(reply.raw)).encode()))
    headers.append((b"x-imgcache", outcome.encode()))
    response.raw_headers = headers
    return response


async def relayed(upstream: httpx.Response, outcome: str) -> Response:
    """The upstream's answer relayed: one small answer of declared length in one piece (a
    streamed relay costs more than it saves there), anything else as it comes."""
    length = upstream.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) <= BUFFERED_RELAY:
        try:
            raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
        return relay(Reply(upstream.status_code, relayed_headers(upstream.headers.raw), raw, 0.0), outcome)
    return streamed(upstream, outcome)


def streamed(upstream: httpx.Response, outcome: str) -> StreamingResponse:
    """The upstream's answer relayed as it comes (its raw bytes, its headers)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    response = StreamingResponse(body(), status_code=upstream.status_code)
    response.raw_headers = [*relayed_headers(upstream.headers.raw), (b"x-imgcache", outcome.encode())]
    return response


def hit_response(body: bytes, hit: Hit, note: str = "") -> Response:
    match = hit.manifest.get("match", "exact")
    return Response(body, media_type="application/json",
                    headers={"x-imgcache": f"hit; tier={hit.tier}; match={match}{note}",
                             "x-request-id": request_id(), "date": formatdate(usegmt=True)})
