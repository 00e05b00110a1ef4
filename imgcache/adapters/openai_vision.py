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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest, UnstorableResult
from ..images import ImageInput, data_url, image_input, image_reference
from ..normalize import normalize_text
from ..pricing import token_cost, vision_cost
from ..request import Request
from .openai import CachedCall, CachedResource, _is_given

if TYPE_CHECKING:
    from ..cache import Cache
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

    def __init__(self, cache: Cache) -> None:
        self.options = cache.vision_options
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


def _usage_cost(model: Any, usage: Any, input_name: str, output_name: str) -> float | None:
    tokens_in, tokens_out = getattr(usage, input_name, None), getattr(usage, output_name, None)
    if not isinstance(model, str) or not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        return None
    return token_cost(model, tokens_in, tokens_out)


class _VisionResource(CachedResource):
    operation: str
    input_tokens: str
    output_tokens: str

    def create(self, **kwargs: Any) -> Any:
        return self._run("create", kwargs, self._call)

    def _call(self, kwargs: dict[str, Any]) -> CachedCall | None:
        if kwargs.get("stream") is True or kwargs.get("background") is True or any(
                _is_given(kwargs.get(name)) for name in _SERVER_STATE):
            self._bypass()
            return None
        images = _Images(self._cache)
        conversation, sent, prompt = self._conversation(kwargs, images)
        if not images.inputs and not self._options.cache_text_only:
            return None
        params = _params(kwargs)
        params[self.conversation_argument] = conversation
        request = Request.build("vision", self.operation, prompt, params, tuple(images.inputs))
        model = kwargs.get("model")

        def cost(response: Any) -> float | None:
            found = _usage_cost(model, getattr(response, "usage", None), self.input_tokens, self.output_tokens)
            return found if found is not None else images.estimate(model, prompt)

        upstream = dict(kwargs)
        if self.conversation_argument in kwargs:
            upstream[self.conversation_argument] = sent
        return CachedCall(request, upstream, _to_json, self._rebuild, cost)

    conversation_argument: str

    def _conversation(self, kwargs: dict[str, Any], images: _Images) -> tuple[Any, Any, str]:
        """(canonical conversation, what to send upstream, the last user text)."""
        raise NotImplementedError

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        raise NotImplementedError


class ChatCompletions(_VisionResource):
    """``client.chat.completions`` with ``create`` cached for image inputs."""

    operation = CHAT_OPERATION
    conversation_argument = "messages"
    input_tokens, output_tokens = "prompt_tokens", "completion_tokens"

    def _conversation(self, kwargs: dict[str, Any], images: _Images) -> tuple[Any, Any, str]:
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

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.chat import ChatCompletion

        return ChatCompletion.model_validate(body)


class Responses(_VisionResource):
    """``client.responses`` with ``create`` cached for image inputs."""

    operation = RESPONSES_OPERATION
    conversation_argument = "input"
    input_tokens, output_tokens = "input_tokens", "output_tokens"

    def _conversation(self, kwargs: dict[str, Any], images: _Images) -> tuple[Any, Any, str]:
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

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.responses import Response

        return Response.model_validate(body)
