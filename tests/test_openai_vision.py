"""Vision calls through ``imgcache.wrap``: chat completions, responses and image edits with the
real ``openai`` SDK against the fake OpenAI server, whose answers name the digests of the
images they were made from (``[images: <12 hex>]``). Photos: scikit-image's sample data
(see _samples.py)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

import imgcache
from imgcache import Cache
from imgcache.match.config import VisionOptions
from imgcache.pricing import token_cost
from imgcache.testing import FakeOpenAI

from _helpers import data_url, encode
from _samples import sample_path

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
EDITS = "/v1/images/edits"

pytestmark = pytest.mark.cache_options("vision", semantic=False)


def digest12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(sample_path("chelsea.png")).convert("RGB")


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.open(sample_path("coffee.png")).convert("RGB")


@pytest.fixture
def client(openai_client: openai.OpenAI, cache: Cache) -> Any:
    return imgcache.wrap(openai_client, cache=cache)


def ask(client: Any, url: str, text: str = "What is in this photo?", *, detail: str = "low",
        **kwargs: Any) -> str:
    kwargs.setdefault("model", "gpt-4o")
    response = client.chat.completions.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}], **kwargs)
    return response.choices[0].message.content


# --- chat completions ------------------------------------------------------------------------


def test_chat_exact_and_perceptual_hits_answer_for_the_stored_image(
        client: Any, cache: Cache, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    png = encode(cat)
    first = ask(client, data_url(png))
    assert f"[images: {digest12(png)}]" in first
    assert ask(client, data_url(png)) == first
    jpeg = encode(cat, "JPEG", quality=85)
    assert ask(client, data_url(jpeg, "image/jpeg")) == first  # the same picture, re-encoded
    webp = encode(cat, "WEBP", lossless=True)
    assert ask(client, data_url(webp, "image/webp")) == first
    assert fake_openai.calls(CHAT) == 1
    stats = cache.stats()
    assert stats["by_match"]["perceptual"] == 2 and stats["by_match"]["exact"] == 1
    assert stats["hits"] == 3 and stats["misses"] == 1


def test_chat_other_pictures_text_and_parameters_miss(
        client: Any, fake_openai: FakeOpenAI, cat: Image.Image, coffee: Image.Image) -> None:
    png = encode(cat)
    ask(client, data_url(png))
    mirrored = encode(cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert digest12(mirrored) in ask(client, data_url(mirrored))
    other = encode(coffee)
    assert digest12(other) in ask(client, data_url(other))
    ask(client, data_url(png), "How many cats are there?")
    ask(client, data_url(png), detail="high")
    ask(client, data_url(png), model="gpt-4o-mini")
    ask(client, data_url(png), temperature=0.2)
    ask(client, data_url(png), max_tokens=50)
    assert fake_openai.calls(CHAT) == 8


def test_chat_whole_conversation_is_in_the_key(client: Any, fake_openai: FakeOpenAI,
                                               cat: Image.Image) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(encode(cat))}}

    def chat(system: str, before: str) -> str:
        return client.chat.completions.create(model="gpt-4o", messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": before},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": [{"type": "text", "text": "Describe it."}, image]},
        ]).choices[0].message.content

    first = chat("You are terse.", "I will send a photo.")
    assert chat("You are terse.", "I will send a photo.") == first
    assert chat("You are  terse. ", "I will send a photo.") == first  # whitespace only
    chat("You are verbose.", "I will send a photo.")
    chat("You are terse.", "I will send a drawing.")
    chat("YOU ARE TERSE.", "I will send a photo.")  # case is kept for chat text
    assert fake_openai.calls(CHAT) == 4


def test_text_only_chat_passes_through_unless_opted_in(
        openai_client: openai.OpenAI, cache: Cache, fake_openai: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    plain = imgcache.wrap(openai_client, cache)
    plain.chat.completions.create(model="gpt-4o", messages=messages)
    plain.chat.completions.create(model="gpt-4o", messages=messages)
    assert fake_openai.calls(CHAT) == 2
    assert cache.stats()["requests"] == 0
    opted = imgcache.wrap(openai_client, cache, cache_text_only=True)
    first = opted.chat.completions.create(model="gpt-4o", messages=messages)
    again = opted.chat.completions.create(model="gpt-4o", messages=messages)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert fake_openai.calls(CHAT) == 3


def test_streaming_and_server_side_conversations_pass_through(
        client: Any, cache: Cache, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    url = data_url(encode(cat))
    for _ in range(2):
        stream = client.chat.completions.create(model="gpt-4o", stream=True, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert fake_openai.calls(CHAT) == 2
    assert cache.stats()["bypassed"] == 2


def test_saved_usd_is_the_first_calls_billed_usage(client: Any, cache: Cache,
                                                   cat: Image.Image) -> None:
    url = data_url(encode(cat))
    response = client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": [{"type": "text", "text": "What?"},
                                     {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]}])
    expected = token_cost("gpt-4o", response.usage.prompt_tokens, response.usage.completion_tokens)
    assert expected and expected > 0
    client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": [{"type": "text", "text": "What?"},
                                     {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]}])
    stats = cache.stats()
    assert stats["spent_usd"] == pytest.approx(expected)
    assert stats["saved_usd"] == pytest.approx(expected)


def test_unreadable_image_passes_through_and_nothing_is_stored(
        client: Any, cache: Cache, fake_openai: FakeOpenAI) -> None:
    bad = data_url(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG signature, then garbage
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            ask(client, bad)
    assert fake_openai.calls(CHAT) == 2
    stats = cache.stats()
    assert stats["unreadable_images"] == 2 and stats["stored"] == 0
    not_base64 = "data:image/png;base64,@@@"
    with pytest.raises(openai.BadRequestError):
        ask(client, not_base64)
    assert cache.stats()["unreadable_images"] == 3


def test_async_client_hits(fake_openai: FakeOpenAI, cache: Cache, cat: Image.Image) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test",
                                      max_retries=0) as raw:
            client = imgcache.wrap(raw, cache)
            answers = []
            for data in (encode(cat), encode(cat, "JPEG", quality=90)):
                response = await client.chat.completions.create(model="gpt-4o", messages=[
                    {"role": "user", "content": [{"type": "text", "text": "What?"},
                                                 {"type": "image_url", "image_url": {"url": data_url(data)}}]}])
                answers.append(response.choices[0].message.content)
            return answers

    first, second = asyncio.run(run())
    assert first == second
    assert fake_openai.calls(CHAT) == 1


# --- remote image URLs -----------------------------------------------------------------------


def test_remote_url_is_fetched_once_and_sent_as_those_bytes(
        client: Any, cache: Cache, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    jpeg = encode(cat, "JPEG", quality=90)
    url = fake_openai.host_file(jpeg, "image/jpeg")
    first = ask(client, url)
    assert fake_openai.calls(url) == 1  # fetched by the cache; the API got the bytes, not the URL
    (sent,) = [r for r in fake_openai.requests if r.path == CHAT]
    assert sent.body["messages"][0]["content"][1]["image_url"]["url"] == data_url(jpeg, "image/jpeg")
    # Another URL serving the same bytes is an exact hit; the same URL is fetched again (its
    # content may have changed) and hits.
    assert ask(client, fake_openai.host_file(jpeg, "image/jpeg")) == first
    assert ask(client, url) == first
    assert fake_openai.calls(CHAT) == 1


def test_remote_url_whose_content_changed_is_a_miss(
        client: Any, fake_openai: FakeOpenAI, cat: Image.Image, coffee: Image.Image) -> None:
    url = fake_openai.host_file(encode(cat), name="photo.png")
    first = ask(client, url)
    fake_openai.host_file(encode(coffee), name="photo.png")
    second = ask(client, url)
    assert second != first and digest12(encode(coffee)) in second


def test_remote_url_failures_pass_through(
        openai_client: openai.OpenAI, tmp_path: Path, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    options = VisionOptions(max_image_bytes=1 << 20, fetch_timeout=0.5)
    with Cache("remote", directory=tmp_path / "c", semantic=False, vision=options) as cache:
        client = imgcache.wrap(openai_client, cache)
        huge = fake_openai.host_file(encode(cat), size=4 << 20)
        slow = fake_openai.host_file(encode(cat), delay=2.0)
        for url in (huge, slow):
            try:
                ask(client, url)
            except openai.APIStatusError:
                pass  # the fake fetches it itself and may reject it: the API's answer
        assert cache.stats()["unreadable_images"] == 2
        assert cache.stats()["stored"] == 0


def test_remote_url_keyed_by_url_when_fetching_is_off(
        openai_client: openai.OpenAI, tmp_path: Path, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    with Cache("by-url", directory=tmp_path / "c", semantic=False,
               vision=VisionOptions(fetch_remote=False)) as cache:
        client = imgcache.wrap(openai_client, cache)
        url = fake_openai.host_file(encode(cat))
        first = ask(client, url)
        assert ask(client, url) == first
        (sent,) = [r for r in fake_openai.requests if r.path == CHAT]
        assert sent.body["messages"][0]["content"][1]["image_url"]["url"] == url
        assert fake_openai.calls(url) == 1  # only the API fetched it
        assert fake_openai.calls(CHAT) == 1


# --- responses -------------------------------------------------------------------------------


def respond(client: Any, image: dict[str, Any], text: str = "What is it?", **kwargs: Any) -> Any:
    return client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": text}, {"type": "input_image", **image}]}], **kwargs)


def test_responses_hit_for_the_same_picture(client: Any, cache: Cache, fake_openai: FakeOpenAI,
                                            cat: Image.Image, coffee: Image.Image) -> None:
    first = respond(client, {"image_url": data_url(encode(cat)), "detail": "auto"})
    again = respond(client, {"image_url": data_url(encode(cat, "JPEG", quality=90), "image/jpeg"),
                             "detail": "auto"})
    assert again.output_text == first.output_text and again.id == first.id
    respond(client, {"image_url": data_url(encode(coffee)), "detail": "auto"})
    respond(client, {"image_url": data_url(encode(cat)), "detail": "auto"}, instructions="Be brief.")
    assert fake_openai.calls(RESPONSES) == 3
    assert cache.stats()["by_match"]["perceptual"] == 1


def test_responses_on_a_server_side_conversation_pass_through(
        client: Any, cache: Cache, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    for _ in range(2):
        try:
            respond(client, {"image_url": data_url(encode(cat))}, conversation="conv_123")
        except openai.APIStatusError:
            pass
    assert cache.stats()["bypassed"] == 2 and cache.stats()["stored"] == 0


# --- image edits -----------------------------------------------------------------------------


def test_edit_hits_for_the_same_image_in_any_file_form(
        client: Any, cache: Cache, fake_openai: FakeOpenAI, tmp_path: Path, cat: Image.Image) -> None:
    png = encode(cat)
    path = tmp_path / "room.png"
    path.write_bytes(png)
    first = client.images.edit(image=("room.png", png, "image/png"), prompt="add a lamp",
                               model="gpt-image-1")
    with open(path, "rb") as fh:
        assert client.images.edit(image=fh, prompt="add a lamp", model="gpt-image-1") == first
    assert client.images.edit(image=path, prompt="Add a lamp.", model="gpt-image-1") == first
    near = encode(cat, "JPEG", quality=92)
    assert client.images.edit(image=("room.jpg", near), prompt="add a lamp",
                              model="gpt-image-1") == first
    assert fake_openai.calls(EDITS) == 1
    client.images.edit(image=("room.png", png), prompt="add a sofa", model="gpt-image-1")
    client.images.edit(image=("room.png", png), prompt="add a lamp", model="gpt-image-1",
                       mask=("mask.png", encode(Image.new("RGBA", cat.size))))
    client.images.edit(image=[("a.png", png), ("b.png", encode(cat, "JPEG", quality=92))],
                       prompt="add a lamp", model="gpt-image-1")
    assert fake_openai.calls(EDITS) == 4


def test_edit_sends_the_file_it_read(client: Any, fake_openai: FakeOpenAI, cat: Image.Image) -> None:
    png = encode(cat)
    client.images.edit(image=("room.png", io.BytesIO(png), "image/png"), prompt="add a lamp",
                       model="gpt-image-1")
    (sent,) = [r for r in fake_openai.requests if r.path == EDITS]
    assert png in sent.raw_body
