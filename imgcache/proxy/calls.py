"""The cached endpoints in the cache's terms: a request body becomes a :class:`CachedRequest`
(the :class:`~imgcache.request.Request`, the body to send upstream, how the answer is stored,
rendered on a hit and priced), or :class:`Passed` (forwarded uncached, and why).

The requests are built by the same functions as the SDK wrapper's
(:func:`~imgcache.adapters.openai.wire.generate_request`,
:func:`~imgcache.adapters.openai.wire.edit_request`,
:func:`~imgcache.adapters.openai.wire.chat_request`,
:func:`~imgcache.adapters.openai.wire.responses_request`) and stored in the same form
(:func:`~imgcache.adapters.openai.wire.body_to_storable`), so a call made through the proxy is a hit
for ``imgcache.wrap(client)`` on the same cache and namespace, and the other way round.

What the SDK sends and what the wrapper keys differ in one place: an edit's form fields are
text. :func:`form_fields` reads them back as the SDK wrote them (``true``/``false``, numbers,
empty for None, ``a[b]`` and ``a[]`` for nested values), so ``n=2`` keys as the number 2 here
too. A body the proxy cannot key (not a JSON object, a missing prompt, a field that is not
JSON data, an SDK option such as ``extra_body`` sent as a field) is forwarded uncached, and the
API answers it as it would without the proxy.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._memo import MISSING, BoundedMemo
from ..adapters.openai.wire import (
    body_to_storable,
    chat_request,
    edit_request,
    generate_request,
    passes_through,
    response_format,
    responses_request,
    storable_to_body,
)
from ..errors import BeyondLimits, InvalidRequest, SourceRefused, UnstorableResult
from ..pricing import generation_cost
from ..request import Request

if TYPE_CHECKING:
    from ..manifest import Hit
    from ..match.config import VisionOptions
    from .upstream import Reply

GENERATIONS = "images.generations"
EDITS = "images.edits"
CHAT = "chat.completions"
RESPONSES = "responses"
ENDPOINTS = {"/v1/images/generations": GENERATIONS, "/v1/images/edits": EDITS,
             "/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}
"""Cached endpoints by path; every other path under ``/v1`` is forwarded."""

_SDK_OPTIONS = frozenset({"extra_body", "extra_headers", "extra_query", "timeout"})
"""SDK arguments that are not API fields: a body naming one is not keyed."""

_REMEMBERED_BODY = 8192
"""Generation bodies up to this size are remembered by their bytes (:func:`generation_of`)."""

ImageUrl = Callable[["Hit", int, bytes], str]
"""``(hit, index, image bytes) -> URL`` for an image of a hit asked for as ``url``."""


@dataclass
class Passed:
    """A request on a cached endpoint that is forwarded uncached."""

    reason: str
    """``stream``, ``background``, ``conversation``, ``text-only`` or ``invalid``."""
    stream: bool = False
    """Relay the answer as it comes (a streamed answer)."""
    bypassed: bool = False
    """Counted as ``bypassed`` in the cache's stats (as the SDK wrapper counts it)."""


@dataclass
class Refused:
    """A request the proxy answers 400 itself, before any upstream call: data beyond the
    limits of :mod:`imgcache._limits` (which the API would refuse too), or an image input
    naming a source the proxy does not read for a caller (a path, a ``file:`` URL, an address
    the fetch policy refuses)."""

    message: str
    code: str | None
    reason: str
    """For ``x-imgcache: error; reason=...``."""

    @classmethod
    def of(cls, exc: InvalidRequest) -> Refused:
        if isinstance(exc, SourceRefused):
            return cls(f"Invalid image URL: {exc}", "invalid_image_url", "image-source")
        return cls(f"Invalid request body: {exc}", "invalid_value", "beyond-limits")


@dataclass
class CachedRequest:
    endpoint: str
    request: Request
    content: bytes
    """The body to send upstream: the caller's bytes, unless remote images were fetched."""
    to_storable: Callable[[Reply], Any]
    render: Callable[[Any, Hit, ImageUrl], bytes]
    """A hit's JSON body from its stored form."""
    cost: float | None | Callable[[Reply], float | None]
    estimate: float | Callable[[], float | None] | None = None
    """What a budget reserves before the call, where ``cost`` is a function of the answer (a
    function: asked after the lookup has read the images)."""

    @property
    def unreadable(self) -> bool:
        """An input image could not be read: the cache passes the call through uncached."""
        return any(image.error is not None for image in self.request.inputs)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _keyable(body: Any) -> bool:
    return isinstance(body, dict) and not (_SDK_OPTIONS & body.keys())


# -- images -----------------------------------------------------------------------------------


def _images_storable(reply: Reply) -> Any:
    return body_to_storable(reply.json())


def _images_render(fmt: str) -> Callable[[Any, Hit, ImageUrl], bytes]:
    def render(stored: Any, hit: Hit, image_url: ImageUrl) -> bytes:
        index = itertools.count()
        return dumps(storable_to_body(stored, fmt, lambda image: image_url(hit, next(index), image)))

    return render


_remembered: BoundedMemo[CachedRequest | Passed | Refused | None] = BoundedMemo(4096, 16 << 20)


def generation_of(raw: bytes) -> CachedRequest | Passed | Refused | None:
    """:func:`generation` of a body given as bytes; None if it is not JSON. A repeat of the
    same bytes (what a hit usually is) is remembered: no parsing, normalizing or hashing."""
    found = _remembered.get(raw, MISSING)
    if found is not MISSING:
        return found  # type: ignore[no-any-return]
    try:
        built = generation(json.loads(raw), raw)
    except (ValueError, RecursionError):  # RecursionError: a body nested thousands deep
        built = None
    if len(raw) <= _REMEMBERED_BODY:
        # The body, and a request holding its prompt twice (as sent and normalized).
        _remembered.put(raw, built, 4 * len(raw) + 2048)
    return built


def generation(body: Any, raw: bytes) -> CachedRequest | Passed | Refused:
    """``POST /v1/images/generations`` with the JSON ``body`` (``raw``: its bytes)."""
    if not _keyable(body):
        return Passed("invalid")
    if body.get("stream") is True:
        return Passed("stream", stream=True, bypassed=True)
    try:
        request = generate_request(body)
    except BeyondLimits as exc:
        return Refused.of(exc)
    except InvalidRequest:
        return Passed("invalid")
    return CachedRequest(GENERATIONS, request, raw, _images_storable, _images_render(response_format(body)),
                         generation_cost(request.params))


def edit(fields: Mapping[str, Any], images: list[bytes], mask: bytes | None, raw: bytes,
         options: VisionOptions) -> CachedRequest | Passed | Refused:
    """``POST /v1/images/edits``: the form's fields (see :func:`form_fields`), its input
    images in order, its mask; ``raw`` is the multipart body, sent upstream unchanged."""
    if fields.get("stream") is True:
        return Passed("stream", stream=True, bypassed=True)
    if not images or _SDK_OPTIONS & fields.keys():
        return Passed("invalid")
    try:
        request = edit_request(fields, images, mask, options)
    except (BeyondLimits, SourceRefused) as exc:
        return Refused.of(exc)
    except InvalidRequest:
        return Passed("invalid")
    return CachedRequest(EDITS, request, raw, _images_storable, _images_render(response_format(fields)),
                         generation_cost(request.params))


# -- vision ------------------------------------------------------------------------------------


def _json_storable(reply: Reply) -> Any:
    body = reply.json()
    if not isinstance(body, dict):
        raise UnstorableResult("the upstream's answer is not a JSON object")
    return body


def _json_render(stored: Any, hit: Hit, image_url: ImageUrl) -> bytes:
    return dumps(stored)


def vision(endpoint: str, body: Any, raw: bytes, options: VisionOptions, cache_text_only: bool
           ) -> CachedRequest | Passed | Refused:
    """``POST /v1/chat/completions`` or ``/v1/responses``. Blocking: remote images are
    fetched here when ``options`` say so (run it in a worker thread)."""
    if not _keyable(body):
        return Passed("invalid")
    reason = passes_through(body)
    if reason is not None:
        return Passed(reason, stream=reason == "stream", bypassed=True)
    build = chat_request if endpoint == CHAT else responses_request
    try:
        call = build(body, options, cache_text_only)
    except (BeyondLimits, SourceRefused) as exc:
        return Refused.of(exc)
    except InvalidRequest:
        return Passed("invalid")
    if call is None:
        return Passed("text-only")
    # Fetched remote images go upstream as data URLs of the bytes that were keyed.
    content = raw if call.sent == body else dumps(call.sent)

    def cost(reply: Reply) -> float | None:
        return call.cost(reply.json())

    return CachedRequest(endpoint, call.request, content, _json_storable, _json_render, cost, call.estimate)


# -- multipart form fields -----------------------------------------------------------------------

_TEXT_FIELDS = frozenset({
    "prompt", "model", "size", "quality", "background", "output_format", "input_fidelity",
    "response_format", "user", "safety_identifier", "style", "moderation", "complexity",
})
"""images.edit fields that are strings whatever they look like."""
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")


def form_value(name: str, text: str) -> Any:
    """A text field as the SDK's value: ``""`` None, ``true``/``false`` bools, numbers
    numbers (except for string fields), anything else the text."""
    if text == "":
        return None
    if name in _TEXT_FIELDS:
        return text
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text
    return text


def form_fields(items: Iterable[tuple[str, str | bytes]]) -> dict[str, Any]:
    """The fields of a form as the SDK's keyword arguments: text typed by :func:`form_value`,
    ``a[b]`` as ``{"a": {"b": ...}}``, ``a[]`` as a list, files as bytes; a repeated plain
    field keeps its last value."""
    fields: dict[str, Any] = {}
    for name, value in items:
        match = _NAME.fullmatch(name)
        base, path = (match[1], re.findall(r"\[([^\[\]]*)\]", match[2])) if match else (name, [])
        _put(fields, base, path, form_value(base, value) if isinstance(value, str) else value)
    return fields


def _put(container: dict[str, Any], key: str, path: list[str], value: Any) -> None:
    if not path:
        container[key] = value
        return
    head, rest = path[0], path[1:]
    if head == "":
        items = container.get(key)
        if not isinstance(items, list):
            items = container[key] = []
        if rest:
            item: dict[str, Any] = {}
            items.append(item)
            _put(item, rest[0], rest[1:], value)
        else:
            items.append(value)
        return
    child = container.get(key)
    if not isinstance(child, dict):
        child = container[key] = {}
    _put(child, head, rest, value)
