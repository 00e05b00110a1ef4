"""Token pricing for vision calls: the worked examples of OpenAI's vision guide."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgcache.pricing import TOKEN_PRICES, image_tokens, model_family, token_cost, vision_cost

sides = st.integers(min_value=1, max_value=100_000)


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),  # scaled to 768x768: 4 tiles
        (2048, 4096, "high", 1105),  # 1024x2048, then 768x1536: 6 tiles
        (4096, 8192, "low", 85),  # low is the base cost whatever the size
        (1024, 1024, "auto", 765),  # auto is priced as high
        (512, 512, "high", 255),  # one tile, not scaled up to 768
        (100, 100, "high", 255),
        (513, 512, "high", 425),  # one pixel over a tile edge is a second tile
    ],
)
def test_gpt_4o_tiles(width: int, height: int, detail: str, tokens: int) -> None:
    assert image_tokens(width, height, detail=detail) == tokens
    assert image_tokens(width, height, detail=detail, model="gpt-4o") == tokens


@pytest.mark.parametrize(
    ("model", "low", "high_1024"),
    [
        ("gpt-4.1", 85, 765),
        ("gpt-4-turbo", 85, 765),
        ("gpt-4o-mini", 2833, 2833 + 4 * 5667),
        ("o1", 75, 675),
        ("o3", 75, 675),
        ("gpt-5", 70, 630),
    ],
)
def test_tile_model_base_and_tile_costs(model: str, low: int, high_1024: int) -> None:
    assert image_tokens(1024, 1024, detail="low", model=model) == low
    assert image_tokens(1024, 1024, detail="high", model=model) == high_1024


@pytest.mark.parametrize(
    ("model", "width", "height", "tokens"),
    [
        ("gpt-4.1-mini", 1024, 1024, 1659),  # 1024 patches x 1.62 = 1658.88, rounded up
        ("gpt-4.1-mini", 1800, 2400, 2353),  # shrunk to 1056x1408: 33 x 44 = 1452 patches
        ("gpt-4.1-nano", 1800, 2400, 3572),  # 1452 x 2.46
        ("gpt-4.1-mini", 4000, 1474, 2348),  # 63 x 23 patches, as the pricing page computes
        ("gpt-4.1-nano", 100, 100, 40),  # 16 patches x 2.46 = 39.36
        ("o4-mini", 1024, 1024, 1762),  # 1024 x 1.72 = 1761.28
        ("gpt-5-mini", 2048, 768, 2489),  # exactly the 1536-patch cap: not shrunk
        ("gpt-5-nano", 32, 32, 3),  # one patch x 2.46
        ("gpt-4.1-mini", 100, 100, 26),  # 16 x 1.62 = 25.92 (the integer multiplier matters)
    ],
)
def test_patch_models(model: str, width: int, height: int, tokens: int) -> None:
    assert image_tokens(width, height, model=model) == tokens


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "gpt-5-mini"])
def test_patch_models_ignore_detail(model: str) -> None:
    costs = {image_tokens(640, 480, detail=d, model=model) for d in ("low", "high", "auto")}
    assert len(costs) == 1


@given(width=sides, height=sides)
def test_tile_counts_stay_between_one_and_eight_tiles(width: int, height: int) -> None:
    tokens = image_tokens(width, height, detail="high")
    assert tokens is not None and 85 + 170 <= tokens <= 85 + 8 * 170


@given(width=sides, height=sides)
def test_patches_never_exceed_the_cap(width: int, height: int) -> None:
    tokens = image_tokens(width, height, model="gpt-4.1-mini")
    assert tokens is not None and 1 <= tokens <= 2489  # 1536 x 1.62, rounded up


def test_every_priced_model_has_an_image_formula() -> None:
    for model in TOKEN_PRICES:
        assert image_tokens(800, 600, detail="high", model=model) is not None, model


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # not gpt-4o: the longest prefix wins
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("o1-2024-12-17", "o1"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
        # Other suffixes are other models with other prices: unknown, not their prefix.
        ("o1-mini", None),
        ("o3-mini", None),
        ("gpt-4o-audio-preview", None),
        ("gpt-4o-mini-tts", None),
        ("gpt-4o-2024-08", None),
        ("chatgpt-4o-latest", None),
        ("dall-e-3", None),
        ("", None),
        (None, None),
    ],
)
def test_model_family(model: str | None, family: str | None) -> None:
    assert model_family(model) == family


def test_snapshots_are_priced_as_their_family() -> None:
    assert token_cost("gpt-4o-mini-2024-07-18", 1_000_000) == 0.15
    assert token_cost("gpt-4o-2024-08-06", 1_000_000) == 2.5
    assert image_tokens(1024, 1024, detail="high", model="gpt-4o-mini-2024-07-18") == 25501


def test_original_detail_has_no_formula() -> None:
    assert image_tokens(1024, 1024, detail="original") is None
    assert image_tokens(1024, 1024, detail="original", model="gpt-4.1-mini") is None
    assert vision_cost("gpt-4o", [(1024, 1024, "high"), (64, 64, "original")]) is None


def test_unknown_models_have_no_price() -> None:
    assert image_tokens(1024, 1024, model="o1-mini") is None
    assert image_tokens(1024, 1024, model=None) is None
    assert token_cost("gpt-image-1", 1000, 1000) is None
    assert vision_cost("llava-13b", [(1024, 1024, "high")], text="hi") is None


@pytest.mark.parametrize(
    ("model", "input_tokens", "output_tokens", "usd"),
    [
        ("gpt-4o", 1000, 500, 0.0075),
        ("gpt-4o", 0, 0, 0.0),
        ("o1", 1_000_000, 1_000_000, 75.0),
        ("gpt-4.1-nano", 765, 0, 0.000077),  # 0.0000765, rounded to 1e-6
        ("gpt-5-nano", 1, 0, 0.0),
    ],
)
def test_token_cost(model: str, input_tokens: int, output_tokens: int, usd: float) -> None:
    assert token_cost(model, input_tokens, output_tokens) == usd


def test_vision_cost_prices_images_and_text_as_input() -> None:
    images = [(1024, 1024, "high"), (4096, 8192, "low")]  # 765 + 85 tokens
    text = "what is this?"  # 13 characters: 4 tokens
    expected = round((765 + 85 + 4) * 2.5 / 1e6 + 100 * 10 / 1e6, 6)
    assert vision_cost("gpt-4o", images, text=text, output_tokens=100) == expected == 0.003135
    assert vision_cost("gpt-4o-2024-11-20", images, text=text, output_tokens=100) == expected


def test_vision_cost_without_images_is_the_text() -> None:
    assert vision_cost("gpt-4o", [], text="x" * 4000) == token_cost("gpt-4o", 1000)
    assert vision_cost("gpt-4o", []) == 0.0


@pytest.mark.parametrize(
    "size",
    [(0, 100), (100, 0), (-1, 100), (1.5, 100), (True, 100), ("1024", 1024), (None, 10)],
)
def test_bad_sizes_raise(size: tuple[Any, Any]) -> None:
    with pytest.raises(ValueError):
        image_tokens(*size)
    with pytest.raises(ValueError):
        vision_cost("unknown-model", [(*size, "high")])  # checked even for unknown models


@pytest.mark.parametrize("detail", ["medium", "HIGH", "", None])
def test_bad_detail_raises(detail: Any) -> None:
    with pytest.raises(ValueError, match="detail"):
        image_tokens(1024, 1024, detail=detail)
    with pytest.raises(ValueError, match="detail"):
        image_tokens(1024, 1024, detail=detail, model="gpt-4.1-mini")  # even where unused


@pytest.mark.parametrize(("input_tokens", "output_tokens"), [(-1, 0), (0, -1), (1.0, 0), (True, 0)])
def test_bad_token_counts_raise(input_tokens: Any, output_tokens: Any) -> None:
    with pytest.raises(ValueError):
        token_cost("gpt-4o", input_tokens, output_tokens)
