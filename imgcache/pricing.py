"""What a call would have cost: the figure behind ``saved_usd``.

Per-image list prices in USD. Unknown models count calls but no dollars (``None``), never a
guess. ``quality="auto"`` and ``size="auto"`` are priced as medium quality at 1024x1024,
the most common choice the API makes.

Vision calls (chat completions or responses with image inputs) are priced per token:
``TOKEN_PRICES`` holds list prices per million input and output tokens, and
``image_tokens`` counts an image's input tokens by the formulas of OpenAI's "Images and
vision" guide. Dated snapshots (``gpt-4o-2024-08-06``) are priced as their family; any other
suffix (``o1-mini``, ``gpt-4o-audio-preview``) is a different model and so unknown.
``vision_cost`` is the estimate before a call; after one, ``token_cost`` of the response's
own ``usage`` is the better figure.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

_SQUARE, _PORTRAIT, _LANDSCAPE = "1024x1024", "1024x1536", "1536x1024"

# model -> quality -> size -> USD per image
IMAGE_PRICES: dict[str, dict[str, dict[str, float]]] = {
    "dall-e-2": {"standard": {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.020}},
    "dall-e-3": {
        "standard": {"1024x1024": 0.040, "1024x1792": 0.080, "1792x1024": 0.080},
        "hd": {"1024x1024": 0.080, "1024x1792": 0.120, "1792x1024": 0.120},
    },
    "gpt-image-1": {
        "low": {_SQUARE: 0.011, _PORTRAIT: 0.016, _LANDSCAPE: 0.016},
        "medium": {_SQUARE: 0.042, _PORTRAIT: 0.063, _LANDSCAPE: 0.063},
        "high": {_SQUARE: 0.167, _PORTRAIT: 0.25, _LANDSCAPE: 0.25},
    },
    "gpt-image-1-mini": {
        "low": {_SQUARE: 0.005, _PORTRAIT: 0.006, _LANDSCAPE: 0.006},
        "medium": {_SQUARE: 0.011, _PORTRAIT: 0.015, _LANDSCAPE: 0.015},
        "high": {_SQUARE: 0.036, _PORTRAIT: 0.052, _LANDSCAPE: 0.052},
    },
}
_DEFAULT_QUALITY = {"dall-e-2": "standard", "dall-e-3": "standard"}


def image_price(model: str | None, size: str | None, quality: str | None, n: int = 1) -> float | None:
    """USD for ``n`` images, or None when the model, size or quality is not in the table."""
    table = IMAGE_PRICES.get(model or "")
    if table is None:
        return None
    if quality in (None, "auto"):
        quality = _DEFAULT_QUALITY.get(model or "", "medium")
    if size in (None, "auto"):
        size = _SQUARE
    per_image = table.get(quality or "", {}).get(size or "")
    return None if per_image is None else round(per_image * n, 6)


def generation_cost(params: Mapping[str, Any]) -> float | None:
    """Price of an images.generate-shaped request from its canonical parameters."""
    n = params.get("n", 1)
    return image_price(params.get("model"), params.get("size"), params.get("quality"), n if isinstance(n, int) else 1)


# ------------------------------------------------------------------ vision (token) pricing

# family -> (USD per 1M input tokens, USD per 1M output tokens)
TOKEN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "o1": (15.00, 60.00),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}

# Tile models: family -> (base tokens, tokens per 512-px tile). "low" detail costs the base.
_TILE_TOKENS: dict[str, tuple[int, int]] = {
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
}
# Patch models: family -> token multiplier in hundredths (integer arithmetic: no 1.62 * 100
# = 162.00000000000003 rounding up a whole token). The detail setting does not apply.
_PATCH_MULTIPLIER: dict[str, int] = {
    "gpt-4.1-mini": 162,
    "gpt-4.1-nano": 246,
    "o4-mini": 172,
    "gpt-5-mini": 162,
    "gpt-5-nano": 246,
}
_TILE, _FIT, _SHORT_SIDE = 512, 2048, 768
_PATCH, _MAX_PATCHES = 32, 1536
_DETAILS = ("low", "high", "auto")
_UNPRICED_DETAIL = "original"  # a valid API value (newer models), with no documented formula here
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}")
_FAMILIES = sorted(TOKEN_PRICES, key=len, reverse=True)  # longest first


def model_family(model: str | None) -> str | None:
    """The ``TOKEN_PRICES`` key for ``model`` or its dated snapshot, else None.

    The longest family that is a prefix wins, and only a date may follow it:
    ``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``; ``o1-mini`` is not ``o1``.
    """
    for family in _FAMILIES:
        if model == family or (
            model and model.startswith(family) and _SNAPSHOT.fullmatch(model[len(family) :])
        ):
            return family
    return None


def image_tokens(
    width: int, height: int, *, detail: str = "auto", model: str | None = "gpt-4o"
) -> int | None:
    """Input tokens of one ``width`` x ``height`` image, or None for an unknown model.

    ``detail="original"`` (full resolution, newer models) also gives None: the guide's
    formulas for these models do not cover it.

    Tile models: ``low`` is the base cost; ``high`` and ``auto`` (priced as high, the upper
    bound) fit the image in 2048x2048, shrink it until the short side is at most 768, and
    add a per-tile cost for each 512-px tile. Patch models count 32-px patches, capped at
    1536 by shrinking the image, times the model's multiplier, whatever the detail.
    """
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if detail == _UNPRICED_DETAIL:
        return None
    if detail not in _DETAILS:
        raise ValueError(f"detail must be one of {', '.join(_DETAILS)}, got {detail!r}")
    family = model_family(model)
    if family in _PATCH_MULTIPLIER:
        return -(-_patches(width, height) * _PATCH_MULTIPLIER[family] // 100)
    if family not in _TILE_TOKENS:
        return None
    base, per_tile = _TILE_TOKENS[family]
    if detail == "low":
        return base
    width, height = _shrink(width, height, max(width, height), _FIT)
    width, height = _shrink(width, height, min(width, height), _SHORT_SIDE)
    tiles = -(-width // _TILE) * -(-height // _TILE)
    return base + per_tile * tiles


def _shrink(width: int, height: int, side: int, target: int) -> tuple[int, int]:
    """Scale so that ``side`` becomes ``target`` if it is larger: whole pixels, at least one."""
    if side <= target:
        return width, height
    return max(1, width * target // side), max(1, height * target // side)


def _patches(width: int, height: int) -> int:
    """32-px patches covering the image, after shrinking it to at most 1536 patches."""
    patches = -(-width // _PATCH) * -(-height // _PATCH)
    if patches <= _MAX_PATCHES:
        return patches
    # Scale to the patch budget, then further so that the tighter side is whole patches
    # (at least one: a sliver of an image still takes a patch).
    scale = math.sqrt(_PATCH * _PATCH * _MAX_PATCHES / (width * height))
    across, down = width * scale / _PATCH, height * scale / _PATCH
    scale *= min(max(1, math.floor(across)) / across, max(1, math.floor(down)) / down)
    # One side now spans a whole number of patches; a float hair above it is not another patch.
    across, down = width * scale / _PATCH, height * scale / _PATCH
    # The guide caps the count too, which only bites for extreme aspect ratios.
    return min(_MAX_PATCHES, math.ceil(across - 1e-9) * math.ceil(down - 1e-9))


def token_cost(model: str | None, input_tokens: int, output_tokens: int = 0) -> float | None:
    """USD for the given token counts at list price, or None when the model is unknown."""
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    family = model_family(model)
    if family is None:
        return None
    per_input, per_output = TOKEN_PRICES[family]
    return round((input_tokens * per_input + output_tokens * per_output) / 1_000_000, 6)


def vision_cost(
    model: str | None,
    images: Sequence[tuple[int, int, str]],
    *,
    text: str = "",
    output_tokens: int = 0,
) -> float | None:
    """Estimated USD of a vision call before it is made, or None when the model is unknown.

    ``images`` are ``(width, height, detail)``; text is counted as ``ceil(len(text) / 4)``
    tokens, priced as input with the images, and ``output_tokens`` as output.
    """
    counts = [image_tokens(w, h, detail=detail, model=model) for w, h, detail in images]
    if model_family(model) is None:  # checked after the images, so bad ones still raise
        return None
    known = [count for count in counts if count is not None]
    if len(known) < len(counts):  # an image at a detail with no formula
        return None
    return token_cost(model, sum(known) + -(-len(text) // 4), output_tokens)


def as_usd(cost: Any) -> float | None:
    """A cost as a finite float, else None: what a pricing function returns is counted and
    stored as JSON, so a bad answer (a string, NaN, a huge int) must cost the figure only."""
    if isinstance(cost, numbers.Real) and not isinstance(cost, bool):
        try:
            usd = float(cost)
        except OverflowError:
            return None
        if math.isfinite(usd):
            return usd
    return None
