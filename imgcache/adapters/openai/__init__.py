"""The OpenAI adapter: ``imgcache.wrap(client)`` and the data path it shares with the proxy
and prewarm. Importing it does not import the ``openai`` SDK.

Its modules, each importing only those above it:

* :mod:`.wire`: the pure request and response builders: a call's arguments (the SDK's keyword
  arguments or the HTTP body) -> :class:`~imgcache.request.Request`, an answer <-> its stored
  form. Used by the SDK wrapper, the proxy and prewarm alike, so their keys cannot drift apart.
* :mod:`.resource`: :class:`CachedResource` and :class:`CachedCall`, an SDK resource's cached
  method through :meth:`Cache.fetch`, and :class:`WrapOptions`.
* :mod:`.vision`: ``chat.completions`` and ``responses`` of the wrapper.
* :mod:`.client`: ``images`` of the wrapper, :class:`CachedClient` and :func:`wrap`.
"""

from .client import CachedClient, read_upload, wrap
from .resource import CachedCall, CachedResource, WrapOptions
from .vision import ChatCompletions, Responses
from .wire import (
    CHAT_OPERATION,
    EDIT_OPERATION,
    GENERATE_OPERATION,
    RESPONSES_OPERATION,
    VisionCall,
    body_to_storable,
    chat_request,
    edit_request,
    generate_request,
    image_params,
    passes_through,
    response_format,
    response_to_storable,
    responses_request,
    storable_to_body,
)

__all__ = [
    "CHAT_OPERATION",
    "EDIT_OPERATION",
    "GENERATE_OPERATION",
    "RESPONSES_OPERATION",
    "CachedCall",
    "CachedClient",
    "CachedResource",
    "ChatCompletions",
    "Responses",
    "VisionCall",
    "WrapOptions",
    "body_to_storable",
    "chat_request",
    "edit_request",
    "generate_request",
    "image_params",
    "passes_through",
    "read_upload",
    "response_format",
    "response_to_storable",
    "responses_request",
    "storable_to_body",
    "wrap",
]
