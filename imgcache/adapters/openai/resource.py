"""What the SDK wrapper's resources share: :class:`CachedResource`, an SDK resource whose
cached methods go through :meth:`Cache.fetch` / :meth:`Cache.afetch` (sync or async, as the
client is), :class:`CachedCall`, what one such call becomes, and :class:`WrapOptions`.

The images resource is in :mod:`.client`, the chat completions and responses resources in
:mod:`.vision`; the requests they build come from :mod:`.wire`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...request import Request

if TYPE_CHECKING:
    from ...cache import Cache
    from ...manifest import Hit


@dataclass(frozen=True)
class WrapOptions:
    cache_text_only: bool = False
    """Also cache chat completions and responses without images (exact match only)."""


@dataclass
class CachedCall:
    """What one SDK call becomes: the request, the arguments sent upstream (images fetched
    for the key are sent as the same bytes), and how its result is stored, rebuilt and priced."""

    request: Request
    kwargs: dict[str, Any]
    to_storable: Callable[[Any], Any]
    from_storable: Callable[[Any, Hit], Any]
    cost: Any
    estimate: float | Callable[[], float | None] | None = None
    """What a budget reserves before the call, where ``cost`` is a function of its result (a
    function: asked after the lookup has read the images)."""


class CachedResource:
    """An SDK resource (``client.images``, ``client.chat.completions``, ...) whose methods that
    call :meth:`_run` are answered from the cache; everything else passes through."""

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
                                 from_storable=call.from_storable, cost_usd=call.cost, estimate_usd=call.estimate)

    async def _arun(self, method: Callable[..., Any], kwargs: dict[str, Any],
                    build: Callable[[dict[str, Any]], CachedCall | None], blocking: bool) -> Any:
        call = await asyncio.to_thread(build, kwargs) if blocking else build(kwargs)
        if call is None:
            return await method(**kwargs)
        return await self._cache.afetch(call.request, lambda: method(**call.kwargs), to_storable=call.to_storable,
                                        from_storable=call.from_storable, cost_usd=call.cost,
                                        estimate_usd=call.estimate)

    def _bypass(self) -> None:
        self._cache.stats_counters.add({"bypassed": 1})

