"""Injected failures: the queue ``FakeOpenAI.fail_next`` fills, and the errors it answers with.

A failure answers the next ``count`` requests, to one path or (unscoped) to every path but
hosted files; 429s, 5xxs, content-policy refusals and 401s carry the API's own messages and
codes, and a ``Retry-After`` header when asked for. The path matching here serves
``FakeOpenAI.calls`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .protocol import ApiError


@dataclass
class Failure:
    status: int
    count: int
    retry_after: float | None
    code: str | None
    message: str | None
    path: str | None


def take_failure(failures: list[Failure], request_path: str) -> Failure | None:
    """Pop one use of the first queued failure matching the path (the caller holds the lock)."""
    hosted = request_path.startswith("/hosted/")
    for failure in failures:
        if (failure.path is None and not hosted) or (
            failure.path is not None and path_matches(request_path, failure.path)
        ):
            failure.count -= 1
            if failure.count == 0:
                failures.remove(failure)
            return failure
    return None


def injected_error(failure: Failure) -> ApiError:
    status, code = failure.status, failure.code
    if status == 429:
        code = code or "rate_limit_exceeded"
        kind = "insufficient_quota" if code == "insufficient_quota" else "requests"
        message = "Rate limit reached for requests (injected by FakeOpenAI)."
    elif status >= 500:
        kind = "server_error"
        message = "The server had an error while processing your request. Sorry about that!"
    elif code == "content_policy_violation":
        kind = "invalid_request_error"
        message = (
            "Your request was rejected as a result of our safety system. "
            "Your prompt may contain text that is not allowed by our safety system."
        )
    elif status == 401:
        code = code or "invalid_api_key"
        kind = "invalid_request_error"
        message = "Incorrect API key provided (injected by FakeOpenAI)."
    else:
        kind = "invalid_request_error"
        message = f"Injected failure with HTTP status {status}."
    headers = {}
    if failure.retry_after is not None:
        headers["Retry-After"] = f"{failure.retry_after:g}"
    return ApiError(status, failure.message or message, type=kind, code=code, headers=headers)


def path_matches(request_path: str, path: str) -> bool:
    """``path`` may be given with or without the ``/v1`` prefix."""
    path = "/" + path.lstrip("/")
    return request_path in (path, "/v1" + path)


def request_path(path_or_url: str) -> str:
    """The path part of a full URL; a bare path unchanged."""
    return urlsplit(path_or_url).path if "://" in path_or_url else path_or_url
