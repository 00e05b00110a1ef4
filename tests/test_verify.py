"""The prompt verifier: rejects what changes the picture, accepts what does not.

All prompts here are made up for these tests. Every pair is checked in both directions.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgcache.match.semantic import verifier as verify_module
from imgcache.match.semantic.verifier import Verdict, content_text, verify
from imgcache.normalize import normalize_prompt


def check(stored: str, query: str) -> Verdict:
    """verify() on normalized prompts, asserting symmetry of the decision."""
    a, b = normalize_prompt(stored), normalize_prompt(query)
    forward, backward = verify(a, b), verify(b, a)
    assert forward.same == backward.same, (stored, query, forward, backward)
    assert isinstance(forward.reason, str) and forward.reason
    return forward


# -- must reject -----------------------------------------------------------------------------

REJECT = {
    "colour": [
        ("a red bicycle leaning on a fence", "a blue bicycle leaning on a fence"),
        ("a kitten with green eyes, studio light", "a kitten with amber eyes, studio light"),
        ("a golden retriever on a lawn", "a silver retriever on a lawn"),
    ],
    "count": [
        ("two apples on a plate", "three apples on a plate"),
        ("2 apples on a plate", "3 apples on a plate"),
        ("a dog in a park", "dogs in a park"),
        ("a cat on a sofa", "one cat on a sofa"),
        ("a castle with four towers", "a castle with 5 towers"),
        ("a red and blue car", "a red and a blue car"),
        ("the sheep is grazing on a hill", "the sheep are grazing on a hill"),
        ("a deer at the edge of a forest", "deer at the edge of a forest"),
        ("the moose stands in a lake", "the moose stand in a lake"),
    ],
    "number": [
        ("a 1977 car on a dusty road", "a 2017 car on a dusty road"),
        ("street at night, 8k", "street at night, 4k"),
        ("lot 1 7 at the auction", "lot 2 7 at the auction"),
        ("thermometer showing -5 degrees", "thermometer showing 5 degrees"),
        ("a room, 1920s style", "a room, 1950s style"),
        ("a poster, version 2.0", "a poster, version 20"),
    ],
    "role swap": [
        ("Monet's painting of a bridge", "a painting of Monet on a bridge"),
        ("the queen's portrait, a golden frame", "a portrait, a golden frame by the queen"),
        ("a horse riding an astronaut", "an astronaut riding a horse"),
        ("an umbrella on top of a spoon", "a spoon on top of an umbrella"),
        ("an umbrella on top of a spoon", "a spoon atop an umbrella"),
        ("a cat on a dog", "a dog on a cat"),
        ("a fox chasing a rabbit through snow", "a rabbit chasing a fox through snow"),
        ("a cat, black, a dog, white", "a cat, white, a dog, black"),
        ("a book to the left of a lamp", "a lamp to the left of a book"),
    ],
    "negation": [
        ("a man without a hat", "a man with a hat"),
        ("a street, no cars", "a street"),
        ("a cafe sign, not blurry", "a cafe sign, blurry"),
        ("a teapot with no handle", "a teapot with a handle"),
    ],
    "medium or style": [
        ("a woodcut of a harbour", "a photo of a harbour"),
        ("a photo of a lighthouse", "an oil painting of a lighthouse"),
        ("a castle, pixel art", "a castle, cartoon"),
        ("a ship in the style of turner", "a ship in the style of hokusai"),
        ("a photo of a red fox in snow", "a red fox in snow"),
        ("a photo of a red fox in snow", "generate an image of a red fox in snow"),
        ("a cube, 3d render", "a cube"),
        ("an illustration of an owl", "an image of an owl"),
    ],
    "time or season": [
        ("a lighthouse at sunset", "a lighthouse at sunrise"),
        ("a village square at noon", "a village square at midnight"),
        ("a birch forest in winter", "a birch forest in autumn"),
    ],
    "size": [
        ("a big dog on a beach", "a huge dog on a beach"),
        ("a small house by a lake", "a tiny house by a lake"),
        ("a tall vase", "a short vase"),
    ],
    "object, subject or place": [
        ("a woman reading in a library", "a man reading in a library"),
        ("a cat on a sofa", "a cat on a sofa with a pillow"),
        ("a cabin in the mountains", "a cabin in the desert"),
        ("a bowl of cherries", "a bowl of plums"),
        ("a tiger", "a tiger and a crane"),
    ],
    "framing": [
        ("a close-up of a tiger", "a tiger"),
        ("an aerial view of a harbour town", "a harbour town"),
        ("a full body portrait of a knight", "a portrait of a knight"),
        ("a knight, wide shot", "a knight, close up"),
    ],
    "unexplained word": [
        ("a quiet street in rain", "a quiet street in light rain"),
        ("a kitten", "a cat"),
        ("a dog's bowl", "a dogs bowl"),
        ("an owl, detailed", "an owl, highly detailed"),
    ],
    "symbols and other scripts": [
        ("a cat 🐱", "a cat 🐶"),
        ("a heart ❤ on a wall", "a heart 💙 on a wall"),
        ("一只红色的猫", "一只蓝色的猫"),
        ("قطة حمراء", "قطة زرقاء"),
        ("a price tag: 10 $", "a price tag: 10 €"),
        ('a sign that says "stop, go"', 'a sign that says "go, stop"'),
        ("a wave 👋🏽", "a wave 👋🏿"),
        ("a door sign that says please", "a door sign that says"),
    ],
    "quoted text is compared as written (but for case)": [
        ("a sign that says 'colour'", "a sign that says 'color'"),
        ('a street sign reading "one way"', 'a street sign reading "1 way"'),
        ('a sign saying "STOP!"', 'a sign saying "stop"'),
        ('a t-shirt that says "AC/DC"', 'a t-shirt that says "AC DC"'),
        ('a mug with "couch potato" on it', 'a mug with "sofa potato" on it'),
    ],
    "a hyphen groups number words": [
        ("fifty one-dollar bills", "fifty-one dollar bills"),
        ("twenty five-cent coins", "twenty-five cent coins"),
    ],
    "a verb's bare form after a singular word may be a noun": [
        ("a dog run", "a dog running"),
        ("an umbrella stand", "an umbrella standing"),
        ("a cat walk", "a cat walking"),
    ],
    "nouns spelled alike in the plural": [
        ("a goldfish in a bowl", "goldfish in a bowl"),
        ("a jellyfish is glowing", "jellyfish are glowing"),
        ("the caribou is running", "the caribou are running"),
        ("a samurai with a sword", "samurai with a sword"),
    ],
    "per-part styles": [
        ("a cat in the style of monet, a dog in the style of picasso",
         "a cat in the style of picasso, a dog in the style of monet"),
    ],
    "a comma part that describes the thing before it": [
        ("left: a cat, right: a dog", "left: a dog, right: a cat"),
        ("panel 1: a boy, panel 2: a girl", "panel 1: a girl, panel 2: a boy"),
        ("a photo of a cat, a painting of a dog", "a photo of a dog, a painting of a cat"),
        ("a man, bald, a woman, blonde", "a man, blonde, a woman, bald"),
        ("man, very tall, woman, short", "man, short, woman, very tall"),
        ("a cat, dark gray, a dog, light brown", "a cat, light brown, a dog, dark gray"),
        ("a woman, in a red dress, a man, in a suit", "a woman, in a suit, a man, in a red dress"),
        ("a dog, wearing a hat, two cats, wearing scarves", "a dog, wearing scarves, two cats, wearing a hat"),
        ("a castle, by greg rutkowski, a dragon, by alphonse mucha",
         "a castle, by alphonse mucha, a dragon, by greg rutkowski"),
    ],
}


@pytest.mark.parametrize(
    ("stored", "query"),
    [pytest.param(a, b, id=f"{kind}: {a} / {b}") for kind, pairs in REJECT.items()
     for a, b in pairs],
)
def test_rejects(stored: str, query: str) -> None:
    verdict = check(stored, query)
    assert not verdict.same, verdict


# -- must accept -----------------------------------------------------------------------------

ACCEPT = {
    "request filler": [
        ("a red fox in snow", "Generate an image of a red fox in snow"),
        ("a red fox in snow", "Please draw a red fox in snow"),
        ("a red fox in snow", "Can you make a red fox in snow?"),
        ("a red fox in snow", "I want a picture of a red fox in snow."),
        ("a red fox in snow", "Could you please create an image showing a red fox in snow"),
        ("a red fox in snow", "make an image: a red fox in snow"),
        ("a red fox in snow", "Render a red fox in snow"),
        ("a red fox in snow", "I'd like to see a red fox in snow"),
        ("a red fox in snow", "show me a picture of a red fox in snow"),
        ("a red fox in snow", "an image of a red fox in snow"),
        ("a photo of a red fox", "generate a photo of a red fox"),
    ],
    "polite ending": [
        ("a red fox in snow", "a red fox in snow please"),
        ("a red fox in snow", "a red fox in snow, for me, please!"),
        ("a red fox in snow", "draw me a red fox in snow, thanks"),
    ],
    "synonyms": [
        ("a photo of a sailboat", "a photograph of a sailboat"),
        ("a cat asleep on a sofa", "a cat asleep on a couch"),
        ("a big barn", "a large barn"),
        ("a small barn", "a little barn"),
        ("a very old car", "a really old automobile"),
        ("a grey colour palette", "a gray color palette"),
        ("a mug on top of a book", "a mug atop a book"),
        ("a mug next to a book", "a mug beside a book"),
        ("a harbour at dawn", "a harbor at dawn"),
        ("a profile picture of an engineer", "a profile image of an engineer"),
        ("two owls on a branch", "2 owls on a branch"),
        ("a red colored scarf", "a red scarf"),
        ("a whale under a boat", "a whale beneath a boat"),
    ],
    "reordered parts": [
        ("Monet's painting of a bridge", "a painting of a bridge by Monet"),
        ("a 70s cartoon of a dinosaur", "a dinosaur, 70s cartoon"),
        ("a lone tree, misty morning, oil painting", "oil painting, a lone tree, misty morning"),
        ("a photo of a red fox in snow", "red fox in the snow, photo"),
        ("a photo of a red fox in snow", "Generate an image of a red fox in snow, photo"),
        ("a watercolor of a canal. boats. sunset", "sunset. boats. a watercolour of a canal"),
        ("a robot, neon lights, and rain", "a robot, rain, and neon lights"),
    ],
    "articles and function words": [
        ("a fox in the snow", "fox in snow"),
        ("the cat is sleeping on a mat", "a cat sleeping on the mat"),
        ("there is a sleeping cat on a mat", "a sleeping cat on a mat"),
    ],
    "verb inflection": [
        ("a cat sitting on a fence", "a cat sits on a fence"),
        ("a girl holding a lantern", "a girl holds a lantern"),
        ("a boy wearing a yellow raincoat", "a boy wears a yellow raincoat"),
    ],
    "punctuation and hyphenation": [
        ("a photo-realistic portrait of a chef", "a photo realistic portrait of a chef"),
        ("a photorealistic portrait of a chef", "a photo-realistic portrait of a chef"),
        ("a close-up of a bee", "a closeup of a bee"),
        ("a sci-fi city, 8 k", "a sci fi city, 8k"),
        ("1 9 9 0 s fashion", "1990s fashion"),  # DiffusionDB's digit-by-digit spelling
        ("a portrait, 3 5 mm film", "a portrait, 35mm film"),
        ("a (beautiful) garden", "a beautiful garden"),
        ("a bee!!! on a flower", "a bee on a flower"),
    ],
    "numbers and verbs": [
        ("twenty-five cats", "25 cats"),
        ("two dogs run in a park", "two dogs running in a park"),
        ("a cat sits on a mat", "a cat sitting on a mat"),
    ],
    "quoted text": [
        ("A sign that says 'Text to Image'", "A SIGN THAT SAYS 'TEXT TO IMAGE'"),
        ('Please draw “a tiger running towards the camera”', '"a tiger running towards the camera"'),
        ("a sign that says 'hi'", 'a sign saying "hi"'),
    ],
    "comma parts that go with the whole picture, or with the one thing": [
        ("a castle, digital art, trending on artstation, 4k", "4k, a castle, trending on artstation, digital art"),
        ("a man, a woman, oil painting, highly detailed", "a woman, a man, highly detailed, oil painting"),
        ("a woman, in a red dress, smiling", "a woman, smiling, in a red dress"),
        ("a girl, a manga drawing by torii kiyomasu, anime", "a girl, anime, a manga drawing by torii kiyomasu"),
        ("3 d render, a robot, 8 k, cinematic", "a robot, cinematic, 3 d render, 8 k"),
    ],
    "symbols and other scripts": [
        ("a cat 🐱", "Generate an image of a cat 🐱"),
        ("一只红色的猫", "一只红色的猫"),
        ("قطة حمراء", "please draw قطة حمراء"),
    ],
}


@pytest.mark.parametrize(
    ("stored", "query"),
    [pytest.param(a, b, id=f"{kind}: {a} / {b}") for kind, pairs in ACCEPT.items()
     for a, b in pairs],
)
def test_accepts(stored: str, query: str) -> None:
    verdict = check(stored, query)
    assert verdict.same, verdict


# -- reasons ---------------------------------------------------------------------------------


def test_reason_names_the_difference() -> None:
    assert check("a red car", "a blue car").reason == "colour: 'red' here, 'blue' there"
    assert "'without' only in the query" in check("a man", "a man without a hat").reason
    swapped = check("a horse riding an astronaut", "an astronaut riding a horse").reason
    assert swapped.startswith("word order differs in")
    assert check("a cat", "a cat").reason.startswith("same content")


# -- content_text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "content"),
    [
        ("generate an image of a red fox in snow", "a red fox in snow"),
        ("please draw a castle", "a castle"),
        ("can you make a kite over a beach, please", "a kite over a beach"),
        ("i want a picture of a teapot", "a teapot"),
        ("a photo of a teapot", "a photo of a teapot"),
        ("a picture frame on a wall", "a picture frame on a wall"),
        ("render of a cube", "render of a cube"),
        ("hello, draw a cat", "a cat"),
        ("hi there can you draw a cat", "a cat"),
        ("hello kitty plush toy", "hello kitty plush toy"),  # a greeting goes with punctuation or a request
        ("hey arnold fan art", "hey arnold fan art"),
        ("draw bridge over a river", "draw bridge over a river"),  # WordNet's drawbridge
        ("make believe castle", "make believe castle"),
        ("render photo of a cat", "photo of a cat"),
        ("generate an image of", ""),
        ("", ""),
    ],
)
def test_content_text(prompt: str, content: str) -> None:
    assert content_text(normalize_prompt(prompt)) == content


# -- empty content, bad input ----------------------------------------------------------------

EMPTY = ["", " ", "   \t\n ", "...", "!!! ???", "please", "generate an image of", "draw me"]
ODD = [
    "a red fox in snow",
    "一只在雪地里的红狐狸",
    "ثعلب أحمر في الثلج",
    "🦊❄️",
    "a 🦊 in ❄ 雪 ثلج, 8k",
    "\u200b\u200d\ufe0f",
    "\u2063\u00ad",
    '"unbalanced quote, here',
    "a" * 5000,
    "photo of " * 500,
]


@pytest.mark.parametrize("empty", EMPTY)
@pytest.mark.parametrize("other", [*EMPTY, "a red fox in snow"])
def test_empty_content_is_never_same(empty: str, other: str) -> None:
    verdict = check(empty, other)
    assert not verdict.same


@pytest.mark.parametrize("prompt", ODD)
def test_odd_input_never_raises(prompt: str) -> None:
    text = normalize_prompt(prompt)
    assert verify(text, text).same == bool(content_text(text))
    for other in ODD:
        check(prompt, other)  # never raises, symmetric


def test_a_100k_character_prompt_is_verified() -> None:
    # Its speed is measured by benchmarks/eval_verifier.py, not asserted here.
    long_prompt = normalize_prompt(("a red fox in the snow, 🦊 雪 8k. " * 4000)[:100_000])
    verify_module._analyse.cache_clear()
    assert not verify(long_prompt, long_prompt + " x").same
    assert verify(long_prompt, long_prompt).same


# -- properties ------------------------------------------------------------------------------

_words = st.sampled_from(
    ["a", "the", "red", "blue", "cat", "dog", "on", "of", "photo", "please", "generate",
     "an", "image", "with", "without", "two", "2", "very", "really", ",", ".", "🐱", "猫",
     "-", '"', "is", "sitting", "and", "there"]
)
_prompts = st.one_of(
    st.text(max_size=200),
    st.lists(_words, max_size=25).map(" ".join),
)


@settings(max_examples=400, deadline=None)
@given(_prompts, _prompts)
def test_never_raises_and_is_symmetric(a: str, b: str) -> None:
    a, b = normalize_prompt(a), normalize_prompt(b)
    forward, backward = verify(a, b), verify(b, a)
    assert forward.same == backward.same
    # Reflexive, except for prompts without content (only filler, articles, punctuation),
    # which are never the same as anything.
    if not verify(a, a).same:
        assert not forward.same
    if not content_text(a):
        assert not verify(a, a).same


@settings(max_examples=200, deadline=None)
@given(_prompts)
def test_filler_prefix_is_transparent(prompt: str) -> None:
    text = normalize_prompt(prompt)
    wrapped = normalize_prompt("generate an image of " + prompt)
    if verify(text, text).same and text == content_text(text):
        assert verify(text, wrapped).same
