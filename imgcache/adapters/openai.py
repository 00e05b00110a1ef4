"""``imgcache.wrap(client)``: a drop-in wrapper around ``openai.OpenAI`` / ``AsyncOpenAI``.

The wrapper behaves like the client: every attribute it does not cache passes through to the
client unchanged. Cached: ``images.generate``, ``images.edit`` (keyed by its input images'
content, matched perceptually, plus the prompt), and ``chat.completions.create`` /
``responses.create`` with image inputs (:mod:`imgcache.adapters.openai_vision`). Streaming
calls pass through.

Image bytes are what is stored, never upstream URLs (they expire within hours): a ``url``
response is downloaded once on a miss. A hit is rebuilt as the same response type, with
``b64_json`` or with a URL that serves the cached bytes (:meth:`Cache.url_for`), whichever the
request asked for, whatever format the stored call used.

The request building and the stored form are pure functions of a call's arguments, shared
with the HTTP proxy (:mod:`imgcache.proxy`), so that a call made through either is a hit for
the other: :func:`generate_request` and :func:`edit_request` (keyword arguments or a JSON
body / form fields -> :class:`Request`), :func:`body_to_storable` and :func:`storable_to_body`
(an ``ImagesResponse`` body <-> what is stored).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest, UnstorableResult
from ..images import image_input
from ..pricing import generation_cost
from ..request import Request

if TYPE_CHECKING:
    from ..cache import Cache
    from ..match.config import VisionOptions
    from ..store.tiered import Hit

GENERATE_OPERATION = "openai.images.generate"
EDIT_OPERATION = "openai.images.edit"
MAX_DOWNLOAD_BYTES = 64 << 20
DOWNLOAD_TIMEOUT = 60.0

# Arguments that do not change the images: left out of the key.
_NOT_IN_KEY = frozenset({
    "prompt", "user", "safety_identifier", "response_format", "stream", "partial_images",
    "extra_headers", "extra_query", "extra_body", "timeout",
})
_DALL_E_DEFAULTS = {"dall-e-2": {"size": "1024x1024", "quality": "standard"},
                    "dall-e-3": {"size": "1024x1024", "quality": "standard", "style": "vivid"}}
_GPT_IMAGE_DEFAULTS = {"size": "auto", "quality": "auto", "background": "auto",
                       "moderation": "auto", "output_format": "png", "output_compression": 100}


def _is_given(value: Any) -> bool:
    """False for None and for the SDK's ``omit`` / ``NOT_GIVEN`` sentinels."""
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


def image_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The output-changing parameters of an images.generate call, defaults resolved."""
    params = {k: v for k, v in kwargs.items() if k not in _NOT_IN_KEY and _is_given(v)}
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, Mapping):  # sent as body fields, so they may change the output
        params.update({k: v for k, v in extra_body.items() if k not in _NOT_IN_KEY})
    model = params.get("model")
    defaults: Mapping[str, Any] = {"n": 1}
    if isinstance(model, str):
        if model in _DALL_E_DEFAULTS:
            defaults = {"n": 1, **_DALL_E_DEFAULTS[model]}
        elif model.startswith(("gpt-image", "chatgpt-image")):
            defaults = {"n": 1, **_GPT_IMAGE_DEFAULTS}
    for key, value in defaults.items():
        params.setdefault(key, value)
    return params


def response_format(kwargs: Mapping[str, Any]) -> str:
    """What the caller will get: DALL-E models answered with URLs unless told otherwise."""
    fmt = kwargs.get("response_format")
    if _is_given(fmt):
        return str(fmt)
    model = kwargs.get("model")
    return "url" if isinstance(model, str) and model.startswith("dall-e") else "b64_json"


def _download(url: str) -> bytes:
    import httpx

    with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as response:
        response.raise_for_status()
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                raise UnstorableResult(f"image at {url[:60]} is larger than {MAX_DOWNLOAD_BYTES} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def generate_request(body: Mapping[str, Any]) -> Request:
    """The request of an ``images.generate`` call, from its keyword arguments (the SDK's) or
    its JSON body (the proxy's): the prompt and the output-changing parameters."""
    if "prompt" not in body:
        raise InvalidRequest("images.generate: the keyword argument 'prompt' is required")
    return Request.build("generation", GENERATE_OPERATION, body["prompt"], image_params(body))


def edit_request(fields: Mapping[str, Any], images: Sequence[bytes], mask: bytes | None,
                 options: VisionOptions) -> Request:
    """The request of an ``images.edit`` call: its input images (by content, in order), the
    mask (by digest), the prompt and the other parameters (``fields``: keyword arguments or
    the form's fields, typed; ``image`` and ``mask`` in them are ignored)."""
    if "prompt" not in fields:
        raise InvalidRequest("images.edit: the keyword arguments 'image' and 'prompt' are required")
    inputs = tuple(image_input(data, options) for data in images)
    params = image_params({k: v for k, v in fields.items() if k not in ("image", "mask")})
    if mask is not None:
        params["mask"] = mask  # keyed by its digest
    return Request.build("vision", EDIT_OPERATION, fields["prompt"], params, inputs)


def response_to_storable(response: Any) -> dict[str, Any]:
    """An ImagesResponse as JSON data with each image's bytes under ``image``."""
    try:
        body = response.model_dump(mode="json", exclude_unset=True)
    except AttributeError as exc:
        raise UnstorableResult(f"not an OpenAI response: {type(response).__name__}") from exc
    return body_to_storable(body)


def body_to_storable(body: dict[str, Any]) -> dict[str, Any]:
    """An ImagesResponse's JSON body as JSON data with each image's bytes under ``image``
    (``b64_json`` decoded, a ``url`` downloaded once); ``body`` is changed in place."""
    if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
        raise UnstorableResult("not an images response body")
    for item in body.get("data") or []:
        if not isinstance(item, dict):
            raise UnstorableResult("an image in the response is not an object")
        b64, url = item.pop("b64_json", None), item.pop("url", None)
        try:
            if b64:
                item["image"] = base64.b64decode(b64, validate=True)
            elif url:
                item["image"] = _download(url)
            else:
                raise UnstorableResult("an image in the response has neither b64_json nor url")
        except (binascii.Error, OSError, ValueError) as exc:
            raise UnstorableResult(f"could not read an image of the response: {exc!r}") from exc
        except Exception as exc:  # httpx errors: the caller still gets the upstream response
            if isinstance(exc, UnstorableResult):
                raise
            raise UnstorableResult(f"could not download an image of the response: {exc!r}") from exc
    return body


def storable_to_body(stored: Mapping[str, Any], fmt: str, url_for: Callable[[bytes], str]) -> dict[str, Any]:
    """The JSON body of an ImagesResponse from its stored form, each image given as ``fmt``
    asks: ``b64_json``, or (``url``) the URL that ``url_for(image_bytes)`` gives."""
    out = dict(stored)
    out["data"] = []
    for item in stored.get("data") or []:
        item = dict(item)
        image = item.pop("image")
        if fmt == "url":
            item["url"] = url_for(image)
        else:
            item["b64_json"] = base64.b64encode(image).decode()
        out["data"].append(item)
    return out


@dataclass
class CachedCall:
    """What one SDK call becomes: the request, the arguments sent upstream (images fetched
    for the key are sent as the same bytes), and how its result is stored, rebuilt and priced."""

    request: Request
    kwargs: dict[str, Any]
    to_storable: Callable[[Any], Any]
    from_storable: Callable[[Any, Hit], Any]
    cost: Any


class CachedResource:
    """An SDK resource (``client.images``, ``client.chat.completions``, ...) whose methods named
    in :meth:`_builders` are answered from the cache; everything else passes through."""

    def __init__(self, resource: Any, cache: Cache, options: WrapOptions) -> None:
        self._resource = resource
        self._cache = cache
        self._options = options

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)

    def _run(self, name: str, kwargs: dict[str, Any], build: Callable[[dict[str, Any]], CachedCall | None],
             *, blocking: bool = True) -> Any:
        """Call ``resource.<name>(**kwargs)`` through the cache (``build`` None: uncached).
        ``blocking`` builders (file reads, image fetches) run in a worker thread under asyncio."""
        method = getattr(self._resource, name)
        # The SDK's @required_args wrapper hides the coroutine function from a plain check.
        if inspect.iscoroutinefunction(inspect.unwrap(method)):
            return self._arun(method, kwargs, build, blocking)
        call = build(kwargs)
        if call is None:
            return method(**kwargs)
        return self._cache.fetch(call.request, lambda: method(**call.kwargs), to_storable=call.to_storable,
                                 from_storable=call.from_storable, cost_usd=call.cost)

    async def _arun(self, method: Callable[..., Any], kwargs: dict[str, Any],
                    build: Callable[[dict[str, Any]], CachedCall | None], blocking: bool) -> Any:
        call = await asyncio.to_thread(build, kwargs) if blocking else build(kwargs)
        if call is None:
            return await method(**kwargs)
        return await self._cache.afetch(call.request, lambda: method(**call.kwargs), to_storable=call.to_storable,
                                        from_storable=call.from_storable, cost_usd=call.cost)

    def _bypass(self) -> None:
        self._cache.stats_counters.add({"bypassed": 1})


class _Images(CachedResource):
    """``client.images`` with ``generate`` and ``edit`` answered from the cache."""

    def generate(self, **kwargs: Any) -> Any:
        return self._run("generate", kwargs, self._generate_call, blocking=False)

    def edit(self, **kwargs: Any) -> Any:
        return self._run("edit", kwargs, self._edit_call)

    def _generate_call(self, kwargs: dict[str, Any]) -> CachedCall | None:
        if kwargs.get("stream") is True:
            self._bypass()
            return None
        request = generate_request(kwargs)
        return CachedCall(request, kwargs, response_to_storable, self._rebuild(response_format(kwargs)),
                          generation_cost(request.params))

    def _edit_call(self, kwargs: dict[str, Any]) -> CachedCall | None:
        """An edit is keyed by its input images (content, perceptually matched, in order), the
        mask's digest, the prompt and the parameters; priced as a generation of its output."""
        if kwargs.get("stream") is True:
            self._bypass()
            return None
        if "prompt" not in kwargs or "image" not in kwargs:
            raise InvalidRequest("images.edit: the keyword arguments 'image' and 'prompt' are required")
        sent, image = dict(kwargs), kwargs["image"]
        several = isinstance(image, list) or (isinstance(image, tuple) and not _is_file_tuple(image))
        read = [read_upload(f) for f in (image if several else [image])]
        sent["image"] = [upload for _, upload in read] if several else read[0][1]
        mask = None
        if _is_given(kwargs.get("mask")):
            mask, sent["mask"] = read_upload(kwargs["mask"])
        request = edit_request(kwargs, [data for data, _ in read], mask, self._cache.vision_options)
        return CachedCall(request, sent, response_to_storable, self._rebuild(response_format(kwargs)),
                          generation_cost(request.params))

    def _rebuild(self, fmt: str) -> Callable[[Any, Hit], Any]:
        from openai.types import ImagesResponse

        def rebuild(body: dict[str, Any], hit: Hit) -> Any:
            body = storable_to_body(body, fmt, lambda image: self._cache.url_for(image, hit.manifest))
            return ImagesResponse.model_validate(body)

        return rebuild


def _is_file_tuple(value: Any) -> bool:
    """The SDK's ``(filename, content[, content_type[, headers]])`` form of one file."""
    return isinstance(value, tuple) and 2 <= len(value) <= 4 and (value[0] is None or isinstance(value[0], str))


def read_upload(upload: Any) -> tuple[bytes, Any]:
    """The bytes of a file argument the SDK accepts (bytes, a path, a file object, or a
    ``(filename, content, ...)`` tuple), and what to send upstream instead: a file object
    once read is sent as ``(filename, bytes)`` so that its name still gives its type."""
    if isinstance(upload, (bytes, bytearray, memoryview)):
        return bytes(upload), upload
    if isinstance(upload, (str, os.PathLike)):
        path = Path(upload)
        try:
            return path.read_bytes(), upload
        except OSError as exc:
            raise InvalidRequest(f"cannot read {os.fspath(upload)!r}: {exc}") from exc
    if _is_file_tuple(upload):
        data, sent = read_upload(upload[1])
        return data, (upload[0], data, *upload[2:])
    if hasattr(upload, "read"):
        data = upload.read()
        if not isinstance(data, bytes):
            raise InvalidRequest("a file argument must be opened in binary mode ('rb')")
        name = getattr(upload, "name", None)
        return data, (os.path.basename(name), data) if isinstance(name, str) else data
    raise InvalidRequest(f"not a file: {type(upload).__name__} (bytes, a path, a binary file object"
                         " or a (filename, content) tuple)")


@dataclass(frozen=True)
class WrapOptions:
    cache_text_only: bool = False
    """Also cache chat completions and responses without images (exact match only)."""


class _Chat:
    def __init__(self, chat: Any, cache: Cache, options: WrapOptions) -> None:
        from .openai_vision import ChatCompletions

        self._chat = chat
        self.completions = ChatCompletions(chat.completions, cache, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class CachedClient:
    """A client wrapper: ``images.generate``, ``images.edit``, and ``chat.completions.create``
    and ``responses.create`` with image inputs are cached; everything else passes through."""

    def __init__(self, client: Any, cache: Cache, options: WrapOptions | None = None) -> None:
        from .openai_vision import Responses

        self._client = client
        self.cache = cache
        self.options = options or WrapOptions()
        self.images = _Images(client.images, cache, self.options)
        self.chat = _Chat(client.chat, cache, self.options)
        self.responses = Responses(client.responses, cache, self.options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<imgcache wrap of {self._client!r} in {self.cache!r}>"

    def with_options(self, **options: Any) -> CachedClient:
        """The client's ``with_options`` (alias ``copy``), still cached."""
        return CachedClient(self._client.with_options(**options), self.cache, self.options)

    copy = with_options

    def __enter__(self) -> CachedClient:
        self._client.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client.__exit__(*exc)

    async def __aenter__(self) -> CachedClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.__aexit__(*exc)


def wrap(client: Any, cache: Cache | None = None, *, cache_text_only: bool = False) -> CachedClient:
    """Wrap an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client; ``cache=None`` means
    :meth:`Cache.from_env`. Chat completions and responses without image inputs pass through
    uncached unless ``cache_text_only``."""
    if cache is None:
        from ..cache import Cache

        cache = Cache.from_env()
    if not hasattr(client, "images"):
        raise InvalidRequest(f"wrap() expects an OpenAI client, not {type(client).__name__}")
    return CachedClient(client, cache, WrapOptions(cache_text_only=cache_text_only))
