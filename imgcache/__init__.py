"""imgcache: a content-addressed cache for image-generation and vision API calls.

    cache = imgcache.Cache(namespace="shop")            # or imgcache.Cache.from_env()
    client = imgcache.wrap(openai.OpenAI(), cache=cache)

    @cache.cached(kind="generation")
    def generate(*, prompt: str, model: str, size: str) -> bytes: ...

Names are imported on first use, so ``import imgcache`` stays fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._lazy import lazy_names

# A library logs; the application decides where it goes (tier failures are WARNINGs).
logging.getLogger("imgcache").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Cache",
    "ConfigError",
    "CorruptData",
    "FetchPolicy",
    "ImageError",
    "ImgcacheError",
    "InvalidRequest",
    "RateLimited",
    "RateLimits",
    "Request",
    "SemanticOptions",
    "SourceRefused",
    "TierError",
    "TierTimeout",
    "TierUnavailable",
    "UncachedResultWarning",
    "UnstorableResult",
    "VisionOptions",
    "__version__",
    "normalize_prompt",
    "wrap",
]

_LAZY = {
    "Budget": "imgcache.spend.config",
    "RateLimits": "imgcache.spend.config",
    "Cache": "imgcache.cache",
    "FetchPolicy": "imgcache.fetch",
    "Request": "imgcache.request",
    "SemanticOptions": "imgcache.match.config",
    "VisionOptions": "imgcache.match.config",
    "normalize_prompt": "imgcache.normalize",
    "wrap": "imgcache.adapters.openai",
    **dict.fromkeys(
        ["BudgetExceeded", "ConfigError", "CorruptData", "ImageError", "ImgcacheError", "InvalidRequest", "RateLimited", "SourceRefused",
         "TierError", "TierTimeout", "TierUnavailable", "UncachedResultWarning", "UnstorableResult"],
        "imgcache.errors",
    ),
}

if TYPE_CHECKING:
    from .adapters.openai import wrap
    from .cache import Cache
    from .errors import (
        BudgetExceeded,
        ConfigError,
        CorruptData,
        ImageError,
        ImgcacheError,
        InvalidRequest,
        RateLimited,
        SourceRefused,
        TierError,
        TierTimeout,
        TierUnavailable,
        UncachedResultWarning,
        UnstorableResult,
    )
    from .fetch import FetchPolicy
    from .match.config import SemanticOptions, VisionOptions
    from .normalize import normalize_prompt
    from .request import Request
    from .spend.config import Budget, RateLimits


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
