"""Prompt normalization, canonical requests and their exact keys."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgcache import InvalidRequest, Request, normalize_prompt
from imgcache.adapters.openai import image_params

SURFACE_VARIANTS = [
    "a red fox in snow",
    "A Red Fox In Snow",
    "A RED FOX IN SNOW.",
    "  a  red\tfox\nin snow  ",
    "a\u00a0red fox in snow!",
    "a red fox in snow...",
    "a red\u200b fox in snow",
    "ａ ｒｅｄ ｆｏｘ ｉｎ ｓｎｏｗ",  # full-width forms fold under NFKC
]


@pytest.mark.parametrize("variant", SURFACE_VARIANTS)
def test_surface_variants_normalize_alike(variant: str) -> None:
    assert normalize_prompt(variant) == "a red fox in snow"


def test_typographic_quotes_become_plain() -> None:
    assert normalize_prompt("a sign that says \u201cOPEN\u201d") == normalize_prompt('a sign that says "open"')
    assert normalize_prompt("the fox\u2019s den") == "the fox's den"


@pytest.mark.parametrize(
    ("a", "b"),
    [("a red fox", "a blue fox"), ("two apples", "three apples"), ("a cat on a dog", "a dog on a cat"),
     ("a fox, snow", "a fox snow"), ("fox?", "fox!?x")],
)
def test_meaningful_differences_survive(a: str, b: str) -> None:
    assert normalize_prompt(a) != normalize_prompt(b)


@given(st.text(max_size=200))
def test_normalization_is_idempotent(text: str) -> None:
    once = normalize_prompt(text)
    assert normalize_prompt(once) == once


# Golden keys: these values are the cache's on-disk contract. If one changes, entries stored
# by earlier releases are orphaned; change KEY_VERSION deliberately, never by accident.
GOLDEN = [
    (("generation", "openai.images.generate", "a red fox in snow",
      {"model": "dall-e-3", "size": "1024x1024", "n": 1}),
     "3dbe40f26118f9e40fcd1f51b2e60f0d43b20112e6aa5f3037547ca335c6e55a"),
    (("generation", "app.gen", "Ünïcode  “quotes”…", {"size": "512x512", "seed": 7, "tags": ["a", 2.5]}),
     hashlib.sha256(
         '{"kind":"generation","op":"app.gen","params":{"seed":7,"size":"512x512","tags":["a",2.5]},'
         '"prompt":"ünïcode \\"quotes\\"","v":1}'.encode()
     ).hexdigest()),
]


def _golden_key(args: tuple) -> str:
    return Request.build(*args).key


def test_golden_keys_are_pinned() -> None:
    for args, expected in GOLDEN:
        assert _golden_key(args) == expected


def test_keys_agree_across_processes() -> None:
    code = (
        "from imgcache import Request;"
        "print(Request.build('generation','op','A Red Fox.',{'b':[1,2.0,{'z':None}],'a':'x'}).key)"
    )
    keys = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout.strip()
        for seed in ("0", "1", "12345")
    }
    assert keys == {Request.build("generation", "op", "a red fox", {"a": "x", "b": [1, 2, {"z": None}]}).key}


def test_key_ignores_parameter_order_and_integral_floats() -> None:
    a = Request.build("generation", "op", "p", {"n": 1, "size": "1024x1024"})
    b = Request.build("generation", "op", "p", {"size": "1024x1024", "n": 1.0})
    assert a.key == b.key


def test_key_depends_on_everything_that_changes_the_output() -> None:
    base = Request.build("generation", "op", "p", {"n": 1})
    assert Request.build("generation", "op", "q", {"n": 1}).key != base.key
    assert Request.build("generation", "op", "p", {"n": 2}).key != base.key
    assert Request.build("generation", "op2", "p", {"n": 1}).key != base.key
    assert Request.build("vision", "op", "p", {"n": 1}).key != base.key
    assert Request.build("generation", "op", "p", {"n": 1, "seed": None}).key != base.key


def test_bytes_parameters_are_keyed_by_digest() -> None:
    a = Request.build("generation", "op", "p", {"image": b"\x00\x01"})
    assert a.params == {"image": {"$sha256": hashlib.sha256(b"\x00\x01").hexdigest()}}
    assert Request.build("generation", "op", "p", {"image": b"\x00\x02"}).key != a.key


@pytest.mark.parametrize("prompt", [None, 42, b"bytes", ["a"]])
def test_prompt_must_be_a_string(prompt: object) -> None:
    with pytest.raises(InvalidRequest):
        Request.build("generation", "op", prompt, {})


@pytest.mark.parametrize("value", [object(), {1: "a"}, float("nan"), {"a": {1, 2}}])
def test_parameters_must_be_json_data(value: object) -> None:
    with pytest.raises(InvalidRequest):
        Request.build("generation", "op", "p", {"x": value})


def test_invalid_request_is_also_a_type_error() -> None:
    with pytest.raises(TypeError):
        Request.build("generation", "op", None, {})


def test_openai_defaults_resolve_so_omitted_equals_explicit() -> None:
    omitted = image_params({"model": "dall-e-3", "prompt": "p"})
    explicit = image_params({"model": "dall-e-3", "prompt": "p", "size": "1024x1024", "quality": "standard",
                             "style": "vivid", "n": 1})
    assert omitted == explicit
    gpt = image_params({"model": "gpt-image-1", "prompt": "p", "quality": None})
    assert gpt == image_params({"model": "gpt-image-1", "prompt": "p", "quality": "auto", "output_format": "png",
                                "background": "auto", "moderation": "auto", "size": "auto",
                                "output_compression": 100})


def test_openai_parameters_that_do_not_change_the_output_are_not_keyed() -> None:
    plain = image_params({"model": "dall-e-3", "prompt": "p"})
    noisy = image_params({"model": "dall-e-3", "prompt": "p", "user": "u1", "timeout": 30,
                          "response_format": "url", "extra_headers": {"x": "y"}, "safety_identifier": "h"})
    assert plain == noisy
    assert image_params({"model": "dall-e-3", "prompt": "p", "extra_body": {"seed": 3}})["seed"] == 3
