"""``client.chat.completions`` and ``client.responses`` of the SDK wrapper: ``create`` is
cached when its input holds images (or always, with ``cache_text_only``); streaming,
``background`` and server-side ``conversation`` calls pass through. The keying is
:func:`~.wire.chat_request` / :func:`~.wire.responses_request` (see :mod:`.wire`). A hit
rebuilds the SDK's response type from the stored JSON (``ChatCompletion``, ``Response``), ids
and usage as first answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import UnstorableResult
from .resource import CachedCall, CachedResource
from .wire import VisionCall, chat_request, passes_through, responses_request

if TYPE_CHECKING:
    from ...manifest import Hit
    from ...match.config import VisionOptions


def _to_json(response: Any) -> dict[str, Any]:
    try:
        return response.model_dump(mode="json", exclude_unset=True)  # type: ignore[no-any-return]
    except AttributeError as exc:
        raise UnstorableResult(f"not an OpenAI response: {type(response).__name__}") from exc


class _VisionResource(CachedResource):
    build: Callable[[Mapping[str, Any], VisionOptions, bool], VisionCall | None]
    """:func:`~.wire.chat_request` or :func:`~.wire.responses_request`."""

    def create(self, **kwargs: Any) -> Any:
        return self._run("create", kwargs, self._call)

    def _call(self, kwargs: dict[str, Any]) -> CachedCall | None:
        if passes_through(kwargs) is not None:
            self._bypass()
            return None
        call = self.build(kwargs, self._cache.vision_options, self._options.cache_text_only)
        if call is None:
            return None
        return CachedCall(call.request, call.sent, _to_json, self._rebuild, call.cost, call.estimate)

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        raise NotImplementedError


class ChatCompletions(_VisionResource):
    """``client.chat.completions`` with ``create`` cached for image inputs."""

    build = staticmethod(chat_request)

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.chat import ChatCompletion

        return ChatCompletion.model_validate(body)


class Responses(_VisionResource):
    """``client.responses`` with ``create`` cached for image inputs."""

    build = staticmethod(responses_request)

    def _rebuild(self, body: dict[str, Any], hit: Hit) -> Any:
        from openai.types.responses import Response

        return Response.model_validate(body)
