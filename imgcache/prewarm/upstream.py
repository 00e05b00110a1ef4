"""The prewarm job's upstream: ``images.generate`` through the same path as a live call.

Each prompt becomes the :class:`~imgcache.request.Request` that ``imgcache.wrap(client)``
(and the proxy) build for ``images.generate(prompt=..., **params)`` — the adapter's own
:func:`~imgcache.adapters.openai.wire.generate_request`, so the keys cannot drift apart — and is
fetched with :meth:`Cache.fetch` and the adapter's stored form of a response: same keys, same
blobs, same index, same stats as a live miss. A prompt warmed here is an exact hit for the
next live ``wrap()`` call with the same parameters.

The upstream is an ``openai.OpenAI`` client (made from ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL`` when none is given; its own retries turned off: the job retries), or any
callable taking ``images.generate``'s keyword arguments and returning an ``ImagesResponse``,
its JSON body as a dict, or the bytes of one image.
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..adapters.openai.client import CachedClient
from ..adapters.openai.wire import (
    body_to_storable,
    generate_request,
    image_params,
    response_to_storable,
)
from ..errors import ConfigError
from ..pricing import IMAGE_PRICES, generation_cost
from ..request import Request
from ..request_log import prewarming
from .inputs import PrewarmItem

if TYPE_CHECKING:
    from ..cache import Cache

MAX_PROMPT_CHARS = {"dall-e-2": 1000, "dall-e-3": 4000}
"""The API's prompt limits; other (GPT image) models take up to DEFAULT_MAX_PROMPT_CHARS."""
DEFAULT_MAX_PROMPT_CHARS = 32000
_NOT_PREWARMABLE = ("stream", "partial_images")
_JOB_OWNED = ("timeout", "extra_headers", "extra_query")


@dataclass(frozen=True)
class Call:
    """One prompt's call: the request it is keyed by, and the arguments sent upstream."""

    request: Request
    kwargs: dict[str, Any]


def _storable(result: Any) -> Any:
    """An upstream answer in the adapter's stored form (images as bytes)."""
    if isinstance(result, (bytes, bytearray, memoryview)):
        return {"created": int(time.time()), "data": [{"image": bytes(result)}]}
    if isinstance(result, Mapping):
        return body_to_storable(copy.deepcopy(dict(result)))
    return response_to_storable(result)


def _hit(body: Any, hit: Any) -> None:
    """A prewarm lookup needs no rebuilt response: only whether there was one."""
    return


def _unpriced(model: str, params: Mapping[str, Any]) -> str | None:
    """Why a call of a known model has no price (a size or quality the model does not
    make: the API would refuse it too), or None."""
    if generation_cost(params) is not None:
        return None
    table = IMAGE_PRICES[model]
    quality = params.get("quality")
    if quality not in (None, "auto") and quality not in table:
        return f"{model} has no quality {quality!r} (it has {', '.join(table)})"
    sizes = sorted({size for by_size in table.values() for size in by_size})
    return f"{model} has no size {params.get('size')!r} (it has {', '.join(sizes)})"


class OpenAIUpstream:
    """``images.generate`` calls for prewarm items; see the module doc."""

    def __init__(self, cache: Cache, *, client: Any = None, call: Callable[..., Any] | None = None,
                 timeout: float | None = None, priced: bool = True) -> None:
        if client is not None and call is not None:
            raise ConfigError("give prewarm a client or a callable, not both")
        if isinstance(client, CachedClient):
            client = client._client
        if client is not None:
            if not hasattr(client, "images"):
                raise ConfigError(f"prewarm expects an OpenAI client, not {type(client).__name__}")
            if inspect.iscoroutinefunction(inspect.unwrap(client.images.generate)):
                raise ConfigError("prewarm needs a synchronous client (openai.OpenAI), not AsyncOpenAI")
        self.cache = cache
        self.timeout = timeout
        self.priced = priced
        self._client = client
        self._call = call
        self._accepted: frozenset[str] | None = None
        self._lock = threading.Lock()

    # -- the client ---------------------------------------------------------------------------

    def _generate(self) -> Callable[..., Any]:
        if self._call is None:
            with self._lock:  # worker threads make their first calls together
                if self._call is None:
                    self._call = self._make_call()
        return self._call

    def _make_call(self) -> Callable[..., Any]:
        if self._client is None:
            try:
                import openai
            except ImportError as exc:
                raise ConfigError("prewarm needs the OpenAI SDK: pip install 'imgcache[openai]'") from exc
            try:
                self._client = openai.OpenAI(max_retries=0)
            except openai.OpenAIError as exc:
                raise ConfigError(f"cannot make an OpenAI client: {exc}") from exc
        options: dict[str, Any] = {"max_retries": 0}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        self._client = self._client.with_options(**options)
        return self._client.images.generate  # type: ignore[no-any-return]

    def accepted(self) -> frozenset[str] | None:
        """The keyword arguments the client's ``images.generate`` takes (None: any)."""
        if self._accepted is None and self._call is None:
            if self._client is not None:
                generate = self._client.images.generate
            else:  # the client made later from the environment
                try:
                    from openai.resources.images import Images
                except ImportError:
                    return None
                generate = Images.generate
            params = inspect.signature(generate).parameters.values()
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                self._accepted = frozenset(p.name for p in params) - {"self"}
        return self._accepted

    def _send(self, **kwargs: Any) -> Any:
        return self._generate()(**kwargs)

    # -- items ----------------------------------------------------------------------------------

    def problem(self, item: PrewarmItem) -> str | None:
        """Why ``item`` cannot be warmed (reported with its line number), or None."""
        params = item.params
        model = params.get("model")
        if model is None:
            return "no model: give --model (or a \"model\" field)"
        if not isinstance(model, str):
            return f"model must be a string, not {model!r}"
        if self.priced and model not in IMAGE_PRICES:
            return f"unknown model {model!r} (known: {', '.join(IMAGE_PRICES)})"
        for name in _NOT_PREWARMABLE:
            if params.get(name):
                return f"{name!r} is not supported: streamed images are not cached"
        for name in _JOB_OWNED:
            if name in params:
                return f"{name!r} is set by the job, not per prompt"
        accepted = self.accepted()
        if accepted is not None:
            unknown = sorted(set(params) - accepted)
            if unknown:
                return f"unknown parameter{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
        n = params.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
            return f"n must be a whole number from 1 to 10, not {n!r}"
        if model == "dall-e-3" and n != 1:
            return "dall-e-3 makes one image a call: n must be 1"
        limit = MAX_PROMPT_CHARS.get(model, DEFAULT_MAX_PROMPT_CHARS)
        if len(item.prompt) > limit:
            return f"prompt of {len(item.prompt):,} characters: {model} takes at most {limit:,}"
        if self.priced:
            return _unpriced(model, image_params(params))
        return None

    def build(self, item: PrewarmItem) -> Call:
        """The call a live ``wrap()`` would make for ``item`` (raises InvalidRequest)."""
        kwargs = {"prompt": item.prompt, **item.params}
        model = kwargs.get("model")
        if isinstance(model, str) and model.startswith("dall-e") and "response_format" not in kwargs:
            kwargs["response_format"] = "b64_json"  # not in the key; saves downloading a URL
        return Call(generate_request(kwargs), kwargs)

    @staticmethod
    def price(call: Call) -> float | None:
        return generation_cost(call.request.params)

    @staticmethod
    def images(call: Call) -> int:
        n = call.request.params.get("n", 1)
        return n if isinstance(n, int) and n > 0 else 1

    @staticmethod
    def scope(call: Call) -> str:
        """The rate-limit scope: OpenAI's limits are per model."""
        return str(call.request.params.get("model", "default"))

    def fetch(self, call: Call, on_call: Callable[[], None]) -> bool:
        """Answer ``call`` through the cache; True if upstream was called (and its result
        handed to the store), False if the cache answered (another process stored it)."""
        called = False

        def upstream() -> Any:
            nonlocal called
            called = True
            on_call()
            return self._send(**call.kwargs)

        with prewarming():
            self.cache.fetch(call.request, upstream, to_storable=_storable, from_storable=_hit,
                             cost_usd=generation_cost(call.request.params))
        return called
