"""The request stream of ``imgcache demo``: what it replays through the cache.

A shop's marketing tools ask for product and campaign images. A few prompts are asked for
all the time, most rarely (a Zipf-like popularity), and the same request arrives spelled in
many ways: other case, stray spaces, typographic quotes, a trailing period, a no-break
space, or with default parameters written out; some ask for the same picture in other words
(request filler in front, comma-separated parts reordered), which semantic matching answers
from the cache. The stream is drawn from a seeded random
generator, so two runs replay the same requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

SEED = 20240611
THREADS = 4
ZIPF_EXPONENT = 1.1
LIVE_PROMPTS = 3
LIVE_PARAMS = {"model": "dall-e-2", "size": "256x256"}
NAMESPACE = "demo"


@dataclass(frozen=True)
class DemoPrompt:
    text: str
    params: dict[str, Any]


_SQUARE = {"model": "dall-e-3", "size": "1024x1024"}
_WIDE = {"model": "dall-e-3", "size": "1792x1024"}
_WIDE_HD = {"model": "dall-e-3", "size": "1792x1024", "quality": "hd"}
_HD = {"model": "dall-e-3", "size": "1024x1024", "quality": "hd"}

# Most popular first: the popularity of a prompt falls with its rank.
PROMPTS: tuple[DemoPrompt, ...] = tuple(
    DemoPrompt(text, params)
    for text, params in (
        ("studio shot of white sneakers on a pastel background", _SQUARE),
        ("a red fox in snow, photo", _SQUARE),
        ('hero banner for a "summer sale" with beach towels and sunglasses', _WIDE),
        ("flat lay of a leather wallet, keys and a watch on oak", _SQUARE),
        ("a ceramic coffee mug with steam on a marble counter, morning light", _SQUARE),
        ("minimalist product photo of a glass perfume bottle, soft shadows", _HD),
        ("a golden retriever wearing a red bandana, studio portrait", _SQUARE),
        ("isometric illustration of a cozy home office", _SQUARE),
        ("a kid's yellow rain boots splashing in a puddle", _SQUARE),
        ('"back to school" flat lay with notebooks, pencils and a backpack', _SQUARE),
        ("a stack of pancakes with blueberries and maple syrup, food photography", _SQUARE),
        ("wide banner of a mountain lake at sunrise for a travel newsletter", _WIDE_HD),
        ("a modern living room with a green velvet sofa, interior photo", _SQUARE),
        ("a bottle of olive oil with fresh basil and tomatoes, rustic table", _SQUARE),
        ("a smartwatch on a runner's wrist, close-up, city background", _SQUARE),
        ("watercolor illustration of a lighthouse for a gift card", _SQUARE),
        ("a pair of noise-cancelling headphones floating on a gradient background", _SQUARE),
        ("a scented candle in an amber jar beside dried flowers", _SQUARE),
        ("an electric scooter parked on a cobblestone street, golden hour", _SQUARE),
        ("a bowl of ramen with a soft-boiled egg, top-down photo", _SQUARE),
        ("a handmade ceramic vase with pampas grass, neutral tones", _SQUARE),
        ("a vintage film camera on a map with a passport", _SQUARE),
        ('holiday banner: "free shipping" with wrapped gifts and pine branches', _WIDE),
        ("a white t-shirt mockup on a wooden hanger", _SQUARE),
        ("a cat sleeping in a cardboard box, soft window light", _SQUARE),
        ("a skincare set of three bottles on wet stones", _SQUARE),
        ("a plate of sushi on a slate board, dark moody photo", _SQUARE),
        ("a camping tent under the milky way, long exposure", _SQUARE),
        ("a loaf of sourdough bread on a linen cloth", _SQUARE),
        ("a bicycle leaning on a pastel pink wall", _SQUARE),
        ("an avocado toast with chili flakes, overhead shot", _SQUARE),
        ("a denim jacket on a mannequin, e-commerce photo", _SQUARE),
        ("a bouquet of tulips in a glass vase, spring campaign", _SQUARE),
        ("a robot vacuum cleaner on a hardwood floor", _SQUARE),
        ("a glass of iced coffee with condensation, summer menu", _SQUARE),
        ("a pair of hiking boots on a rocky trail", _SQUARE),
        ("an open laptop with a plant and a notebook, workspace photo", _SQUARE),
        ("a chocolate cake slice with raspberries, bakery menu", _SQUARE),
        ("a yoga mat rolled up with a water bottle, fitness ad", _SQUARE),
        ("a hand-drawn map illustration of a small seaside town", _SQUARE),
    )
)


# -- the request stream ------------------------------------------------------------------


def _typographic_quotes(text: str) -> str:
    out, opening = [], True
    for ch in text:
        if ch == '"':
            out.append("\u201c" if opening else "\u201d")
            opening = not opening
        elif ch == "'":
            out.append("\u2019")
        else:
            out.append(ch)
    return "".join(out)


def _variant(text: str, rng: random.Random) -> str:
    """The same prompt as someone else would type it: nothing that can change the image."""
    kind = rng.choice(("upper", "title", "spaces", "quotes", "period", "nbsp", "mixed"))
    if kind == "upper":
        return text.upper()
    if kind == "title":
        return text.title()
    if kind == "spaces":
        return "  " + text.replace(" ", "  ", 2) + " "
    if kind == "quotes":
        return (
            _typographic_quotes(text) if any(q in text for q in "'\"") else text.capitalize() + "."
        )
    if kind == "period":
        return text + "."
    if kind == "nbsp":
        return text.replace(" ", "\u00a0", 1)
    return _typographic_quotes(text.capitalize()).replace(", ", ",  ") + " ."


_FILLERS = ("Generate an image of ", "Please draw ", "Can you make ", "I want a picture of ",
            "Create an image of ")


def _paraphrase(text: str, rng: random.Random) -> str:
    """The same picture asked for in other words: request filler in front, or the
    comma-separated parts in another order (what semantic matching recognizes)."""
    parts = text.split(", ")
    if len(parts) > 2 and rng.random() < 0.5:
        head, *rest = parts
        rng.shuffle(rest)
        return ", ".join([head, *rest])
    return rng.choice(_FILLERS) + text[0].lower() + text[1:]


def _with_defaults(params: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Sometimes write out parameters that are the API's defaults anyway."""
    params = dict(params)
    if rng.random() < 0.3:
        params.setdefault("quality", "standard")
    if rng.random() < 0.15:
        params.setdefault("n", 1)
    if params.get("model") == "dall-e-3" and rng.random() < 0.15:
        params.setdefault("style", "vivid")
    return params


def request_stream(
    count: int, prompts: tuple[DemoPrompt, ...] = PROMPTS, *, seed: int = SEED
) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (prompt asked for, keyword arguments for ``images.generate``) pairs,
    reproducible from ``seed``: the prompt spelled another way, or in other words."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(prompts))]
    stream = []
    for prompt in rng.choices(prompts, weights, k=count):
        roll = rng.random()
        if roll < 0.35:
            text = prompt.text
        elif roll < 0.8:
            text = _variant(prompt.text, rng)
        else:
            text = _paraphrase(prompt.text, rng)
        kwargs = {"prompt": text, **_with_defaults(prompt.params, rng)}
        if rng.random() < 0.3:
            kwargs["response_format"] = "b64_json"  # what the caller gets, not what is drawn
        stream.append((prompt.text, kwargs))
    return stream


def live_cost_ceiling() -> float:
    from ..pricing import image_price

    return LIVE_PROMPTS * (image_price(LIVE_PARAMS["model"], LIVE_PARAMS["size"], None) or 0.0)
