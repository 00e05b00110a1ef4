"""What to do after an upstream call failed: retry, wait, skip, or stop the run.

Small values at the I/O edge (STYLE 11): :func:`classify` turns an exception into an
:class:`Outcome`; :func:`retry_after` reads the server's wait; :class:`Backoff` is the
exponential back-off with jitter for when it gives none.

The OpenAI SDK's own retries are off inside the job (``max_retries=0``): this is the only
retry logic, so one 429 is waited for once and counted once.

========================  ==============  ==============================================
upstream answer            outcome         what the job does
========================  ==============  ==============================================
429 rate limit             rate_limited    pause the model's buckets (Retry-After, else
                                           back-off) and try again
429 insufficient_quota     fatal           stop the run: every call would fail
401                        fatal           stop the run (bad API key)
408, 409, 5xx, timeout,    transient       back off and retry, a bounded number of times
connection error
other 4xx (content policy, refused         record it (later runs skip it) and go on
bad parameter, 403, 404)
anything else              error           count it as failed and go on
========================  ==============  ==============================================
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_WAIT = 120.0
"""The longest a Retry-After is honoured; longer ones are cut to this."""

Kind = Literal["rate_limited", "transient", "refused", "error", "fatal"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None
    """Seconds the server asked us to wait (429), capped; None when it did not say."""
    maybe_billed: bool = False
    """No answer came back (timeout, dropped connection): the call may have been carried out."""


@dataclass(frozen=True)
class Backoff:
    """``base * 2**attempt`` seconds, at most ``cap``, less up to ``jitter`` of it at random
    (so that workers that failed together do not retry together)."""

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        full = min(self.cap, self.base * 2 ** max(0, attempt))
        return full * (1 - self.jitter * rng())


def retry_after(headers: Mapping[str, str] | Any, *, now: float | None = None,
                cap: float = MAX_WAIT) -> float | None:
    """Seconds to wait from response headers: OpenAI's ``retry-after-ms``, else
    ``Retry-After`` as seconds or as an HTTP date. None when absent or unreadable; at most
    ``cap``; never negative."""
    if headers is None:
        return None
    lookup = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = lookup.get(name)
        if value is None:
            continue
        try:
            seconds = float(value.strip()) * scale
        except ValueError:
            continue
        if math.isnan(seconds):
            continue
        return min(cap, max(0.0, seconds))
    value = lookup.get("retry-after")
    if value is None:
        return None
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if date is None or date.tzinfo is None:
        return None
    seconds = date.timestamp() - (time.time() if now is None else now)
    return min(cap, max(0.0, seconds))


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return code
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("code"), str):
            return str(error["code"])
    return None


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc) or type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, TimeoutError) or bool(names & {"APITimeoutError", "TimeoutException", "Timeout"})


def _is_connection(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, ConnectionError) or bool(
        names & {"APIConnectionError", "TransportError", "ConnectError", "RemoteProtocolError"})


def classify(exc: BaseException, *, now: float | None = None, cap: float = MAX_WAIT) -> Outcome:
    """The outcome of an upstream exception: the OpenAI SDK's errors, httpx's, or any
    exception with a ``status_code`` (and a ``response`` with headers) from a custom callable."""
    status, code = _status(exc), _code(exc)
    short = _message(exc)[:300]
    if status is None:
        if getattr(exc, "maybe_billed", None) is True:  # an exception that says so (the proxy's own)
            return Outcome("transient", f"no answer: {short}", maybe_billed=True)
        if _is_timeout(exc):
            return Outcome("transient", f"timed out: {short}", maybe_billed=True)
        if _is_connection(exc):
            return Outcome("transient", f"connection failed: {short}", maybe_billed=True)
        return Outcome("error", f"{type(exc).__name__}: {short}")
    label = f"{status}{' ' + code if code else ''}"
    if status == 429:
        if code == "insufficient_quota":
            return Outcome("fatal", f"{label}: {short}", status, code)
        wait = retry_after(getattr(getattr(exc, "response", None), "headers", None), now=now, cap=cap)
        return Outcome("rate_limited", f"{label}: {short}", status, code, wait)
    if status == 401:
        return Outcome("fatal", f"{label}: {short}", status, code)
    if status in (408, 409) or status >= 500:
        return Outcome("transient", f"{label}: {short}", status, code)
    if 400 <= status < 500:
        return Outcome("refused", f"{label}: {short}", status, code)
    return Outcome("error", f"{label}: {short}", status, code)
