"""What a call would have cost: the figure behind ``saved_usd``.

Per-image list prices in USD. Unknown models count calls but no dollars (``None``), never a
guess. ``quality="auto"`` and ``size="auto"`` are priced as medium quality at 1024x1024,
the most common choice the API makes.
"""

from __future__ import annotations

from collections.abc import Mapping
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
