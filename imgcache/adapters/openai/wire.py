"""The OpenAI API's requests and answers in the cache's terms: pure functions of a call's
arguments (the SDK's keyword arguments, or the JSON body / form fields the proxy receives),
shared by the SDK wrapper (:mod:`.client`, :mod:`.vision`), the HTTP proxy
(:mod:`imgcache.proxy`) and prewarm (:mod:`imgcache.prewarm`), so that a call made through one
is a hit for the others. No SDK object is held here and no cache is touched; the only I/O is
fetching images (remote image inputs, ``url`` answers) to key and store their bytes.

Images (``images.generate``, ``images.edit``): :func:`generate_request` and
:func:`edit_request` (arguments -> :class:`Request`), :func:`response_to_storable`,
:func:`body_to_storable` and :func:`storable_to_body` (an ``ImagesResponse`` <-> what is
stored: each image's bytes, never an upstream URL, as those expire within hours).

Vision (``chat.completions.create``, ``responses.create``): a call is cached when its input
holds images (or always, with ``cache_text_only``). Its key:

* every image by content (sha256 of its bytes, perceptually matched on an exact miss): data
  URLs are decoded; remote URLs are fetched once (size limit, timeout) and the fetched bytes
  are what is sent upstream, as a data URL, so the answer is made from the image that was
  keyed; a ``file_id`` (or a URL with fetching off) is keyed by name, exactly;
* the whole conversation in order, text lightly normalized (:func:`normalize_text`: case and
  punctuation kept), each image replaced by its position and ``detail``;
* every other argument that can change the answer (model, temperature, max tokens, tools,
  response format, instructions, ...). Arguments that cannot (user, metadata, store,
  service tier, prompt cache keys, timeouts, headers) are left out.

Passed through uncached (:func:`passes_through` says why): streaming, ``background``
responses, and calls on a server-side ``conversation`` (its state changes between calls).
:func:`chat_request` and :func:`responses_request` turn keyword arguments or a JSON body into
a :class:`VisionCall` (request, what to send upstream, how to price the answer).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import InvalidRequest, UnstorableResult
from ...images import ImageInput, data_url, image_input, image_reference
from ...normalize import normalize_text
from ...pricing import token_cost, vision_cost
from ...request import Request

if TYPE_CHECKING:
    from ...match.config import VisionOptions

GENERATE_OPERATION = "openai.images.generate"
EDIT_OPERATION = "openai.images.edit"
CHAT_OPERATION = "openai.chat.completions.create"
RESPONSES_OPERATION = "openai.responses.create"
MAX_DOWNLOAD_BYTES = 64 << 20
DOWNLOAD_TIMEOUT = 60.0


def _is_given(value: Any) -> bool:
    """False for None and for the SDK's ``omit`` / ``NOT_GIVEN`` sentinels."""
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


# images.generate, images.edit

# Arguments that do not change the images: left out of the key.
_IMAGE_NOT_IN_KEY = frozenset({
    "prompt", "user", "safety_identifier", "response_format", "stream", "partial_images",
    "extra_headers", "extra_query", "extra_body", "timeout",
})
_DALL_E_DEFAULTS = {"dall-e-2": {"size": "1024x1024", "quality": "standard"},
                    "dall-e-3": {"size": "1024x1024", "quality": "standard", "style": "vivid"}}
_GPT_IMAGE_DEFAULTS = {"size": "auto", "quality": "auto", "background": "auto",
                       "moderation": "auto", "output_format": "png", "output_compression": 100}


def image_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The output-changing parameters of an images.generate call, defaults resolved."""
    params = {k: v for k, v in kwargs.items() if k not in _IMAGE_NOT_IN_KEY and _is_given(v)}
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, Mapping):  # sent as body fields, so they may change the output
        params.update({k: v for k, v in extra_body.items() if k not in _IMAGE_NOT_IN_KEY})
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


# chat.completions.create, responses.create

_VISION_NOT_IN_KEY = frozenset({
    "messages", "input", "stream", "stream_options", "user", "safety_identifier", "metadata", "store",
    "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
    "extra_headers", "extra_query", "extra_body", "timeout",
})
_SERVER_STATE = ("conversation",)
"""Arguments naming server-side state that changes between calls: such calls are not cached."""


class _VisionImages:
    """The images of one call, collected while its messages are canonicalized."""

    def __init__(self, options: VisionOptions) -> None:
        self.options = options
        self.inputs: list[ImageInput] = []
        self.details: list[str] = []

    def add(self, source: str, detail: Any, *, reference: bool = False) -> tuple[dict[str, Any], str]:
        """Read an image (a URL, or with ``reference`` a file id); returns its canonical part
        and the URL to send upstream (the fetched bytes for a remote URL)."""
        if not isinstance(source, str):
            raise InvalidRequest(f"an image URL or file id must be a string, not {type(source).__name__}")
        image = image_reference(f"file:{source}") if reference else image_input(source, self.options)
        detail = detail if isinstance(detail, str) else "auto"
        self.inputs.append(image)
        self.details.append(detail)
        sent = data_url(image.data) if image.url and isinstance(image.data, bytes) else source
        return {"image": len(self.inputs) - 1, "detail": detail}, sent

    def estimate(self, model: Any, text: str) -> float | None:
        """The input's list price by the token formula, from the sizes found when the images
        were fingerprinted (None if one was not, or the model is not priced)."""
        sizes = [image.fingerprinted for image in self.inputs]
        if not isinstance(model, str) or any(fp is None for fp in sizes):
            return None
        return vision_cost(model, [(fp.width, fp.height, detail)  # type: ignore[union-attr]
                                   for fp, detail in zip(sizes, self.details)], text=text)


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "model_dump"):  # a pydantic object of the SDK
        return value.model_dump(exclude_unset=True)
    raise InvalidRequest(f"{what} must be a mapping, not {type(value).__name__}")


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidRequest(f"{what} must be a list, not {type(value).__name__}")
    return list(value)


def _vision_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in kwargs.items() if k not in _VISION_NOT_IN_KEY and _is_given(v)}
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, Mapping):  # sent as body fields, so they may change the answer
        params.update({k: v for k, v in extra_body.items() if k not in _VISION_NOT_IN_KEY})
    return params


def _field(value: Any, name: str) -> Any:
    """``value[name]`` of a JSON body or ``value.name`` of an SDK object (None if absent)."""
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def _usage_cost(model: Any, usage: Any, input_name: str, output_name: str) -> float | None:
    tokens_in, tokens_out = _field(usage, input_name), _field(usage, output_name)
    if not isinstance(model, str) or not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        return None
    return token_cost(model, tokens_in, tokens_out)


def passes_through(body: Mapping[str, Any]) -> str | None:
    """Why a chat or responses call is not cached (``stream``, ``background``,
    ``conversation``: server-side state), or None."""
    if body.get("stream") is True:
        return "stream"
    if body.get("background") is True:
        return "background"
    for name in _SERVER_STATE:
        if _is_given(body.get(name)):
            return name
    return None


@dataclass
class VisionCall:
    """A chat or responses call made into a request (see :func:`chat_request`)."""

    request: Request
    sent: dict[str, Any]
    """The arguments (or JSON body) to send upstream: the caller's, with each fetched remote
    image replaced by a data URL of the bytes that were keyed."""
    images: _VisionImages
    model: Any
    prompt: str
    usage_names: tuple[str, str]

    def cost(self, response: Any) -> float | None:
        """The call's list price from the answer's billed usage (an SDK object or a JSON
        body), else estimated by the image token formula."""
        found = _usage_cost(self.model, _field(response, "usage"), *self.usage_names)
        return found if found is not None else self.estimate()

    def estimate(self) -> float | None:
        """The list price of the call's input (images and text) by the token formula: what a
        budget reserves before the call (the output is counted when it is settled)."""
        return self.images.estimate(self.model, self.prompt)


@dataclass(frozen=True)
class _Api:
    operation: str
    argument: str
    """The argument that holds the conversation."""
    usage_names: tuple[str, str]
    conversation: Callable[[Mapping[str, Any], _VisionImages], tuple[Any, Any, str]]


def chat_request(body: Mapping[str, Any], options: VisionOptions, cache_text_only: bool = False
                 ) -> VisionCall | None:
    """The request of a ``chat.completions.create`` call (keyword arguments or JSON body), or
    None when it holds no image (unless ``cache_text_only``). Remote images are fetched here
    (blocking I/O). Check :func:`passes_through` first."""
    return _vision_call(_CHAT, body, options, cache_text_only)


def responses_request(body: Mapping[str, Any], options: VisionOptions, cache_text_only: bool = False
                      ) -> VisionCall | None:
    """The request of a ``responses.create`` call; see :func:`chat_request`."""
    return _vision_call(_RESPONSES, body, options, cache_text_only)


def _vision_call(api: _Api, body: Mapping[str, Any], options: VisionOptions,
                 cache_text_only: bool) -> VisionCall | None:
    images = _VisionImages(options)
    conversation, sent, prompt = api.conversation(body, images)
    if not images.inputs and not cache_text_only:
        return None
    params = _vision_params(body)
    params[api.argument] = conversation
    request = Request.build("vision", api.operation, prompt, params, tuple(images.inputs))
    upstream = dict(body)
    if api.argument in body:
        upstream[api.argument] = sent
    return VisionCall(request, upstream, images, body.get("model"), prompt, api.usage_names)


def _chat_conversation(kwargs: Mapping[str, Any], images: _VisionImages) -> tuple[Any, Any, str]:
    """(canonical conversation, what to send upstream, the last user text) of a chat call."""
    if "messages" not in kwargs:
        raise InvalidRequest("chat.completions.create: the keyword argument 'messages' is required")
    canonical, sent, last_user = [], [], ""
    for message in _as_list(kwargs["messages"], "messages"):
        message = _as_dict(message, "a message")
        content = message.get("content")
        if isinstance(content, str):
            canonical.append({**message, "content": normalize_text(content)})
            sent.append(message)
            text = content
        elif content is None:
            canonical.append(message)
            sent.append(message)
            text = ""
        else:
            parts, sent_parts, texts = [], [], []
            for part in _as_list(content, "message content"):
                part = _as_dict(part, "a content part")
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append({**part, "text": normalize_text(part["text"])})
                    sent_parts.append(part)
                    texts.append(part["text"])
                elif part.get("type") == "image_url":
                    spec = _as_dict(part.get("image_url"), "image_url")
                    canonical_part, url = images.add(spec.get("url"), spec.get("detail"))
                    parts.append({"type": "image_url", **canonical_part})
                    sent_parts.append({**part, "image_url": {**spec, "url": url}})
                else:  # audio, files, refusals: keyed as they are
                    parts.append(part)
                    sent_parts.append(part)
            canonical.append({**message, "content": parts})
            sent.append({**message, "content": sent_parts})
            text = " ".join(texts)
        if message.get("role") == "user":
            last_user = text
    return canonical, sent, last_user


def _responses_conversation(kwargs: Mapping[str, Any], images: _VisionImages) -> tuple[Any, Any, str]:
    """(canonical input, what to send upstream, the last user text) of a responses call."""
    given = kwargs.get("input")
    if isinstance(given, str):
        return normalize_text(given), given, given
    if not _is_given(given):
        return None, given, ""
    canonical, sent, last_user = [], [], ""
    for item in _as_list(given, "input"):
        item = _as_dict(item, "an input item")
        content = item.get("content")
        if not isinstance(content, (list, tuple)):
            if isinstance(content, str):
                canonical.append({**item, "content": normalize_text(content)})
                last_user = content if item.get("role") == "user" else last_user
            else:
                canonical.append(item)  # tool outputs, reasoning items: keyed as they are
            sent.append(item)
            continue
        parts, sent_parts, texts = [], [], []
        for part in content:
            part = _as_dict(part, "a content part")
            kind = part.get("type")
            if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
                parts.append({**part, "text": normalize_text(part["text"])})
                sent_parts.append(part)
                texts.append(part["text"])
            elif kind == "input_image" and _is_given(part.get("image_url")):
                canonical_part, url = images.add(part["image_url"], part.get("detail"))
                parts.append({"type": "input_image", **canonical_part})
                sent_parts.append({**part, "image_url": url})
            elif kind == "input_image" and _is_given(part.get("file_id")):
                canonical_part, _ = images.add(part["file_id"], part.get("detail"), reference=True)
                parts.append({"type": "input_image", **canonical_part})
                sent_parts.append(part)
            else:
                parts.append(part)
                sent_parts.append(part)
        canonical.append({**item, "content": parts})
        sent.append({**item, "content": sent_parts})
        if item.get("role") == "user":
            last_user = " ".join(texts)
    return canonical, sent, last_user


_CHAT = _Api(CHAT_OPERATION, "messages", ("prompt_tokens", "completion_tokens"), _chat_conversation)
_RESPONSES = _Api(RESPONSES_OPERATION, "input", ("input_tokens", "output_tokens"), _responses_conversation)
