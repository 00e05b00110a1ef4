"""``imgcache.wrap(client)``: a drop-in wrapper around ``openai.OpenAI`` / ``AsyncOpenAI``.

The wrapper behaves like the client: every attribute it does not cache passes through to the
client unchanged. Cached: ``images.generate``, ``images.edit`` (keyed by its input images'
content, matched perceptually, plus the prompt), and ``chat.completions.create`` /
``responses.create`` with image inputs (:mod:`.vision`). Streaming calls pass through.

Image bytes are what is stored, never upstream URLs (they expire within hours): a ``url``
response is downloaded once on a miss. A hit is rebuilt as the same response type, with
``b64_json`` or with a URL that serves the cached bytes (:meth:`Cache.url_for`), whichever the
request asked for, whatever format the stored call used.

The request building and the stored form are pure functions of a call's arguments, in
:mod:`.wire`, shared with the HTTP proxy (:mod:`imgcache.proxy`) and prewarm, so that a call
made through one is a hit for the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest
from ...pricing import generation_cost
from .resource import CachedCall, CachedResource, WrapOptions
from .vision import ChatCompletions, Responses
from .wire import (
    _is_given,
    edit_request,
    generate_request,
    response_format,
    response_to_storable,
    storable_to_body,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ...cache import Cache
    from ...manifest import Hit


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
        data, _ = read_upload(upload[1])
        return data, (upload[0], data, *upload[2:])
    if hasattr(upload, "read"):
        data = upload.read()
        if not isinstance(data, bytes):
            raise InvalidRequest("a file argument must be opened in binary mode ('rb')")
        name = getattr(upload, "name", None)
        return data, (os.path.basename(name), data) if isinstance(name, str) else data
    raise InvalidRequest(f"not a file: {type(upload).__name__} (bytes, a path, a binary file object"
                         " or a (filename, content) tuple)")


class _Chat:
    def __init__(self, chat: Any, cache: Cache, options: WrapOptions) -> None:
        self._chat = chat
        self.completions = ChatCompletions(chat.completions, cache, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class CachedClient:
    """A client wrapper: ``images.generate``, ``images.edit``, and ``chat.completions.create``
    and ``responses.create`` with image inputs are cached; everything else passes through."""

    def __init__(self, client: Any, cache: Cache, options: WrapOptions | None = None) -> None:
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

    def __enter__(self) -> Self:
        self._client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)


def wrap(client: Any, cache: Cache | None = None, *, cache_text_only: bool = False) -> CachedClient:
    """Wrap an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client; ``cache=None`` means
    :meth:`Cache.from_env`. Chat completions and responses without image inputs pass through
    uncached unless ``cache_text_only``."""
    if cache is None:
        from ...cache import Cache

        cache = Cache.from_env()
    if not hasattr(client, "images"):
        raise InvalidRequest(f"wrap() expects an OpenAI client, not {type(client).__name__}")
    return CachedClient(client, cache, WrapOptions(cache_text_only=cache_text_only))
