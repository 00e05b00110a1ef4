"""``imgcache.wrap(client)``: a drop-in wrapper around ``openai.OpenAI`` / ``AsyncOpenAI``.

The wrapper behaves like the client: every attribute it does not cache passes through to the
client unchanged. Cached here: ``images.generate`` (streaming calls pass through).

Image bytes are what is stored, never upstream URLs (they expire within hours): a ``url``
response is downloaded once on a miss. A hit is rebuilt as the same response type, with
``b64_json`` or with a URL that serves the cached bytes (:meth:`Cache.url_for`), whichever the
request asked for, whatever format the stored call used.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest, UnstorableResult
from ..pricing import generation_cost
from ..request import Request

if TYPE_CHECKING:
    from ..cache import Cache
    from ..store.tiered import Hit

OPERATION = "openai.images.generate"
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


def response_to_storable(response: Any) -> dict[str, Any]:
    """An ImagesResponse as JSON data with each image's bytes under ``image``."""
    try:
        body = response.model_dump(mode="json", exclude_unset=True)
    except AttributeError as exc:
        raise UnstorableResult(f"not an OpenAI response: {type(response).__name__}") from exc
    for item in body.get("data") or []:
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


class _ImagesWrapper:
    """``client.images`` with ``generate`` answered from the cache."""

    def __init__(self, images: Any, cache: Cache) -> None:
        self._images = images
        self._cache = cache
        # The SDK's @required_args wrapper hides the coroutine function from a plain check.
        self._async = inspect.iscoroutinefunction(inspect.unwrap(images.generate))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._images, name)

    def _request(self, kwargs: Mapping[str, Any]) -> tuple[Request, float | None]:
        if "prompt" not in kwargs:
            raise InvalidRequest("images.generate: the keyword argument 'prompt' is required")
        params = image_params(kwargs)
        return Request.build("generation", OPERATION, kwargs["prompt"], params), generation_cost(params)

    def _rebuild(self, fmt: str) -> Any:
        from openai.types import ImagesResponse

        def rebuild(body: dict[str, Any], hit: Hit) -> Any:
            out = dict(body)
            out["data"] = []
            for item in body.get("data") or []:
                item = dict(item)
                image = item.pop("image")
                if fmt == "url":
                    item["url"] = self._cache.url_for(image, hit.manifest)
                else:
                    item["b64_json"] = base64.b64encode(image).decode()
                out["data"].append(item)
            return ImagesResponse.model_validate(out)

        return rebuild

    def generate(self, **kwargs: Any) -> Any:
        if kwargs.get("stream") is True:
            self._cache.stats_counters.add({"bypassed": 1})
            return self._images.generate(**kwargs)
        request, cost = self._request(kwargs)
        rebuild = self._rebuild(response_format(kwargs))
        if self._async:
            return self._cache.afetch(request, lambda: self._images.generate(**kwargs),
                                      to_storable=response_to_storable, from_storable=rebuild, cost_usd=cost)
        return self._cache.fetch(request, lambda: self._images.generate(**kwargs),
                                 to_storable=response_to_storable, from_storable=rebuild, cost_usd=cost)


class CachedClient:
    """A client wrapper: ``images.generate`` cached, everything else passed through."""

    def __init__(self, client: Any, cache: Cache) -> None:
        self._client = client
        self.cache = cache
        self.images = _ImagesWrapper(client.images, cache)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<imgcache wrap of {self._client!r} in {self.cache!r}>"

    def with_options(self, **options: Any) -> CachedClient:
        """The client's ``with_options`` (alias ``copy``), still cached."""
        return CachedClient(self._client.with_options(**options), self.cache)

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


def wrap(client: Any, cache: Cache | None = None) -> CachedClient:
    """Wrap an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client; ``cache=None`` means
    :meth:`Cache.from_env`."""
    if cache is None:
        from ..cache import Cache

        cache = Cache.from_env()
    if not hasattr(client, "images"):
        raise InvalidRequest(f"wrap() expects an OpenAI client, not {type(client).__name__}")
    return CachedClient(client, cache)
