"""``@cache.cached(kind="generation")`` and ``@cache.cached(kind="vision")``: any function,
sync or async.

The function's arguments make up the request: ``prompt`` is the prompt, every other argument
(after the signature's defaults are applied, so an omitted default equals the explicit one)
is a parameter, except those named in ``ignore``. For ``kind="vision"`` the arguments
``image`` and ``images`` hold the input images (bytes, a path, a PIL image, a data or http(s)
URL, or a list of them: order matters), keyed by content and matched perceptually
(:mod:`imgcache.match.perceptual`); ``prompt`` is optional there. Results of type bytes, str or JSON data
(bytes allowed inside) are stored faithfully; anything else is returned uncached with an
:class:`~imgcache.errors.UncachedResultWarning`.

The wrapper carries ``cache_key(**kwargs)``, ``invalidate(**kwargs)``, ``cache``, ``memo``
(the requests of recent keyword calls, bounded by :data:`MEMO_ITEMS` and :data:`MEMO_BYTES`)
and ``__wrapped__`` (cachetools-style attributes rather than a second API).

A call that cannot be keyed (a prompt that is not valid Unicode, parameters nested too deep,
an integer too large: see :mod:`imgcache.request`) raises InvalidRequest; the function is not
called.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._memo import BoundedMemo, deep_size
from ..errors import InvalidRequest
from ..images import ImageInput, image_input
from ..pricing import generation_cost, vision_cost
from ..request import KINDS, Request

if TYPE_CHECKING:
    from ..cache import Cache

DEFAULT_IGNORE = frozenset({"user", "timeout", "extra_headers", "request_timeout"})
"""Arguments that never change the output: left out of the key unless ``ignore`` says otherwise."""
IMAGE_ARGUMENTS = ("image", "images")
"""The arguments of a ``kind="vision"`` function that hold its input images."""
_SCALARS = frozenset({str, int, float, bool, type(None)})
MEMO_ITEMS = 4096
MEMO_BYTES = 8 << 20
"""Each decorated function remembers the requests of up to MEMO_ITEMS recent keyword calls
holding up to MEMO_BYTES (the prompts, parameters and keys they keep alive): about 4,096 calls
with short prompts, a few dozen with 100,000-character ones. A call whose entry would take
more than a sixteenth of it (the prompt is counted three times: argument, raw and normalized;
an ASCII prompt of ~170,000 characters or more) is not remembered."""

MemoKey = tuple[tuple[str, type, Any], ...]
Built = tuple[Request, Any]
"""A request and its cost (a number, None, or a function of the result)."""


def cached(
    cache: Cache,
    kind: str = "generation",
    *,
    name: str | None = None,
    ignore: Iterable[str] = DEFAULT_IGNORE,
    cost_usd: float | Callable[[Mapping[str, Any]], float | None] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Make a caching decorator.

    ``name`` identifies the function in keys (default ``module.qualname``): two functions
    share entries only when given the same name. ``cost_usd`` is what one call costs, a
    number or a function of the parameters; by default it is looked up in the pricing table
    from ``model``, ``size``, ``quality`` and ``n`` parameters when the function has them.
    """
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {KINDS}, not {kind!r}")
    ignored = frozenset(ignore)

    def decorate(fn: Callable[..., Any]) -> Any:
        operation = name or f"{fn.__module__}.{fn.__qualname__}"
        signature = inspect.signature(fn)
        defaults = {
            p.name: p.default
            for p in signature.parameters.values()
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        var_keyword = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            if not args:
                merged = {**defaults, **kwargs}  # the fast path: keyword calls
            else:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError as exc:
                    raise InvalidRequest(f"{operation}: {exc}") from exc
                bound.apply_defaults()
                merged = dict(bound.arguments)
                if var_keyword is not None:
                    merged.update(merged.pop(var_keyword, {}))
            return merged

        memo: BoundedMemo[Built] = BoundedMemo(MEMO_ITEMS, MEMO_BYTES)

        def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Built:
            """The request and its cost; memoized for keyword calls with scalar arguments
            (typed, so that ``n=True`` and ``n=1`` never share a memo slot)."""
            memo_key = None
            # Vision requests are never memoized: a path names bytes that may change.
            if kind == "generation" and not args and all(type(v) in _SCALARS for v in kwargs.values()):
                memo_key = tuple((k, type(v), v) for k, v in kwargs.items())
                found = memo.get(memo_key)
                if found is not None:
                    return found
            built = _build(args, kwargs)
            if memo_key is not None:
                memo.put(memo_key, built, _memo_size(memo_key, built[0]))
            return built

        def _build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Built:
            params = arguments(args, kwargs)
            images = _take_images(params, operation, cache) if kind == "vision" else ()
            if "prompt" not in params and kind == "generation":
                raise InvalidRequest(f"{operation}: the keyword argument 'prompt' is required")
            prompt = params.pop("prompt", "")
            for key in ignored.intersection(params):
                del params[key]
            request = Request.build(kind, operation, prompt, params, images)
            if callable(cost_usd):
                cost = cost_usd(request.params)
            elif cost_usd is not None or kind == "generation":
                cost = cost_usd if cost_usd is not None else generation_cost(request.params)
            else:
                cost = lambda result: _vision_cost(request)
            return request, cost

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                request, cost = build(args, kwargs)
                return await cache.afetch(request, lambda: fn(*args, **kwargs), cost_usd=cost)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                request, cost = build(args, kwargs)
                return cache.fetch(request, lambda: fn(*args, **kwargs), cost_usd=cost)

        wrapper.cache = cache
        wrapper.memo = memo
        wrapper.cache_key = lambda *args, **kwargs: build(args, kwargs)[0].key
        wrapper.invalidate = lambda *args, **kwargs: cache.delete(build(args, kwargs)[0])
        return wrapper

    return decorate


def _memo_size(memo_key: MemoKey, request: Request) -> int:
    """An upper bound of the bytes a memo entry keeps alive: its key (argument names and
    values) and its request (prompts, parameters, key; objects they share counted each time).
    The argument types are shared by every entry and not counted."""
    size = sys.getsizeof(memo_key) + sys.getsizeof(request)
    for triple in memo_key:
        size += sys.getsizeof(triple) + sys.getsizeof(triple[0]) + sys.getsizeof(triple[2])
    return size + deep_size((request.prompt, request.raw_prompt, request.params, request.key))


def _take_images(params: dict[str, Any], operation: str, cache: Cache) -> tuple[ImageInput, ...]:
    """Pop the image arguments and read them; InvalidRequest when there are none or one is of
    a type that is not an image input (unreadable ones pass through: see :func:`image_input`)."""
    values: list[Any] = []
    for name in IMAGE_ARGUMENTS:
        value = params.pop(name, None)
        if value is None:
            continue
        values.extend(value if isinstance(value, (list, tuple)) else [value])
    if not values:
        raise InvalidRequest(f"{operation}: a vision function takes its images as 'image' or 'images'")
    return tuple(image_input(value, cache.vision_options) for value in values)


def _vision_cost(request: Request) -> float | None:
    """The input tokens of the images (by the token formula of the model and detail level) and
    of the prompt, at the model's list price; None when a size or the model is unknown."""
    sizes = [image.fingerprinted for image in request.inputs]
    model, detail = request.params.get("model"), request.params.get("detail", "auto")
    if any(fp is None for fp in sizes) or not isinstance(model, str) or not isinstance(detail, str):
        return None
    return vision_cost(model, [(fp.width, fp.height, detail) for fp in sizes if fp is not None],
                       text=request.prompt)
