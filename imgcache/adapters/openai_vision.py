"""Vision calls of the OpenAI SDK: ``chat.completions.create`` and ``responses.create``.

A call is cached when its input holds images (or always, with ``cache_text_only``). Its key:

* every image by content (sha256 of its bytes, perceptually matched on an exact miss): data
  URLs are decoded; remote URLs are fetched once (size limit, timeout) and the fetched bytes
  are what is sent upstream, as a data URL, so the answer is made from the image that was
  keyed; a ``file_id`` (or a URL with fetching off) is keyed by name, exactly;
* the whole conversation in order, text lightly normalized (:func:`normalize_text`: case and
  punctuation kept), each image replaced by its position and ``detail``;
* every other argument that can change the answer (model, temperature, max tokens, tools,
  response format, instructions, ...). Arguments that cannot (user, metadata, store,
  service tier, prompt cache keys, timeouts, headers) are left out.

Passed through uncached: streaming, ``background`` responses, and calls on a server-side
``conversation`` (its state changes between calls). A hit rebuilds the SDK's response type
from the stored JSON (``ChatCompletion``, ``Response``), ids and usage as first answered.

The keying is pure and shared with the HTTP proxy (:mod:`imgcache.proxy`):
:func:`chat_request` and :func:`responses_request` turn keyword arguments or a JSON body into
a :class:`VisionCall` (request, what to send upstream, how to price the answer), and
:func:`passes_through` says why a call is not cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest, UnstorableResult
from ..images import ImageInput, data_url, image_input, image_reference
from ..normalize import normalize_text
from ..pricing import token_cost, vision_cost
from ..request import Request
from .openai import CachedCall, CachedResource, _is_given

if TYPE_CHECKING:
    from ..match.config import VisionOptions
    from ..store.tiered import Hit

CHAT_OPERATION = "openai.chat.completions.create"
RESPONSES_OPERATION = "openai.responses.create"

_NOT_IN_KEY = frozenset({
    "messages", "input", "stream", "stream_options", "user", "safety_identifier", "metadata", "store",
    "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
    "extra_headers", "extra_query", "extra_body", "timeout",
})
_SERVER_STATE = ("conversation",)
"""Arguments naming server-side state that changes between calls: such calls are not cached."""


class _Images:
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


def _params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in kwargs.items() if k not in _NOT_IN_KEY and _is_given(v)}
    extra_body = kwargs.get("extra_body")
    if isinstance(extra_body, Mapping):  # sent as body fields, so they may change the answer
        params.update({k: v for k, v in extra_body.items() if k not in _NOT_IN_KEY})
    return params


def _to_json(response: Any) -> dict[str, Any]:
    try:
        return response.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]
    except AttributeError as exc:
        raise UnstorableResult(f"not an OpenAI response: {type(response).__name__}") from exc


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
    images: _Images
    model: Any
    prompt: str
    usage_names: tuple[str, str]

    def cost(self, response: Any) -> float | None:
        """The call's list price from the answer's billed usage (an SDK object or a JSON
        body), else estimated by the image token formula."""
        found = _usage_cost(self.model, _field(response, "usage"), *self.usage_names)
        return found if found is not None else self.images.estimate(self.model, self.prompt)


@dataclass(frozen=True)
class _Api:
    operation: str
    argument: str
    """The argument that holds the conversation."""
    usage_names: tuple[str, str]
    conversation: Callable[[Mapping[str, Any], _Images], tuple[Any, Any, str]]


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
    images = _Images(options)
    conversation, sent, prompt = api.conversation(body, images)
    if not images.inputs and not cache_text_only:
        return None
    params = _params(body)
    params[api.argument] = conversation
    request = Request.build("vision", api.operation, prompt, params, tuple(images.inputs))
    upstream = dict(body)
    if api.argument in body:
        upstream[api.argument] = sent
    return VisionCall(request, upstream, images, body.get("model"), prompt, api.usage_names)


class _VisionResource(CachedResource):
    api: _Api

    def create(self, **kwargs: Any) -> Any:
        return self._run("create", kwargs, self._call)

    def _call(self, kwargs: dict[str, Any]) -> CachedCall | None:
        if passes_through(kwargs) is not None:
            self._bypass()
            return None
        call = _vision_call(self.api, kwargs, self._cache.vision_options, self._options.cache_text_only)
        if call is None:
            return None
        return CachedCall(call.request, call.sent, _to_json, self._rebuild, call.cost)

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        raise NotImplementedError


def _chat_conversation(kwargs: Mapping[str, Any], images: _Images) -> tuple[Any, Any, str]:
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


def _responses_conversation(kwargs: Mapping[str, Any], images: _Images) -> tuple[Any, Any, str]:
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


class ChatCompletions(_VisionResource):
    """``client.chat.completions`` with ``create`` cached for image inputs."""

    api = _CHAT

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.chat import ChatCompletion

        return ChatCompletion.model_validate(body)


class Responses(_VisionResource):
    """``client.responses`` with ``create`` cached for image inputs."""

    api = _RESPONSES

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.responses import Response

        return Response.model_validate(body)
