"""Every error imgcache raises, under one root.

    ImgcacheError
    ├── ConfigError            bad configuration (namespace, URLs, environment values, budgets)
    ├── BudgetExceeded         a miss whose upstream call would pass the budget (raised before
    │                          the call; the proxy answers 429 budget_exceeded with Retry-After)
    ├── RateLimited            a miss whose turn under the rate limits would come after the queue
    │                          timeout (raised before the call; the proxy answers 429)
    ├── InvalidRequest         a request the cache cannot key: missing or non-string prompt,
    │   │                      parameters that are not JSON data (also a TypeError); raised
    │   │                      before any upstream call
    │   ├── BeyondLimits       text that is not valid Unicode, nesting or an integer beyond the
    │   │                      limits of imgcache._limits (the proxy answers 400)
    │   └── SourceRefused      an image input names what may not be read for this caller: a
    │                          path or file: URL sent to the proxy, an address the fetch policy
    │                          refuses (the proxy answers 400)
    ├── UnstorableResult       a result the cache cannot store faithfully, by type or beyond the
    │                          limits of imgcache._limits (also a TypeError); adapters catch it,
    │                          warn, and return the result uncached
    ├── ImageError             an image the cache cannot read: not an image, truncated, too large
    │                          (a decompression bomb), an unsupported mode (also a ValueError)
    ├── CorruptData            stored data that fails its digest or does not parse: it costs its
    │                          key (a miss, counted as corrupt), never a tier or a call
    ├── TierError              a storage tier failed; never reaches a caller of a cached call,
    │   ├── TierUnavailable    the cache front skips the tier and counts it
    │   └── TierTimeout
    └── ProxyError             what the proxy answers a caller or its upstream with (a refused
                               namespace, a body too large or too slow, an upstream failure)

A result that is returned uncached is announced with :class:`UncachedResultWarning`.

Errors raised by the wrapped function or API (upstream errors) are never wrapped: they
propagate to the caller unchanged.
"""

from __future__ import annotations


class ImgcacheError(Exception):
    """Root of every error imgcache raises."""


class ConfigError(ImgcacheError, ValueError):
    """The cache was configured with a value it cannot use."""


class BudgetExceeded(ImgcacheError):
    """The upstream call a miss needs would take spending past the budget. Raised before the
    call; hits are still served. ``retry_after``: seconds until the window resets (None: a
    fixed budget, it never does)."""

    def __init__(self, message: str, *, limit_usd: float, spent_usd: float, window: str,
                 retry_after: float | None) -> None:
        super().__init__(message)
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.window = window
        self.retry_after = retry_after


class RateLimited(ImgcacheError):
    """The call's turn under the configured rate limits would come later than the queue
    timeout allows. Raised before the call; ``retry_after``: seconds until that turn."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRequest(ImgcacheError, TypeError):
    """The call cannot be turned into a cache key."""


class BeyondLimits(InvalidRequest):
    """Request data beyond what imgcache keys: a lone surrogate, nesting deeper than
    ``imgcache._limits.MAX_DEPTH``, an integer of ``MAX_INT_DIGITS`` digits or more."""


class SourceRefused(InvalidRequest):
    """An image input names a source this process may not read for its caller."""


class UnstorableResult(ImgcacheError, TypeError):
    """The result cannot be stored without loss."""


class ImageError(ImgcacheError, ValueError):
    """An input image that cannot be fingerprinted; nothing is cached for it."""


class TierError(ImgcacheError):
    """A storage tier failed. ``tier`` names it (memory, disk, redis, s3)."""

    def __init__(self, tier: str, message: str) -> None:
        super().__init__(f"{tier}: {message}")
        self.tier = tier


class TierUnavailable(TierError):
    """The tier could not be reached or refused the operation."""


class TierTimeout(TierError):
    """The tier did not answer in time."""


class CorruptData(ImgcacheError):
    """Stored bytes failed their digest or could not be parsed. ``where`` names who found
    them: a tier (disk, redis, s3), or the part that parses them (manifest, codec)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class ProxyError(ImgcacheError):
    """Raised inside the proxy; each subclass becomes one kind of HTTP answer."""


class UncachedResultWarning(UserWarning):
    """A result was returned to the caller but not stored (see the message for why)."""
