"""``imgcache.wrap``: the real ``openai`` SDK, through the cache, against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import openai
import pytest
from openai.types import ImagesResponse

import imgcache
from imgcache import Cache
from imgcache.testing import FakeOpenAI

IMAGES = "/v1/images/generations"
DALL_E_3_STANDARD = 0.040  # USD per 1024x1024 standard image (the pricing table's figure)

pytestmark = pytest.mark.cache_options("wrap")


@pytest.fixture
def client(openai_client: openai.OpenAI, cache: Cache) -> Any:
    return imgcache.wrap(openai_client, cache=cache)


def b64_images(response: Any) -> list[bytes]:
    assert isinstance(response, ImagesResponse)
    assert response.data
    return [base64.b64decode(image.b64_json or "") for image in response.data]


def generate_b64(client: Any, prompt: str = "a red fox in snow", **kwargs: Any) -> list[bytes]:
    kwargs.setdefault("model", "dall-e-3")
    return b64_images(client.images.generate(prompt=prompt, response_format="b64_json", **kwargs))


def file_url_bytes(url: str) -> bytes:
    parts = urlsplit(url)
    assert parts.scheme == "file", url
    return Path(url2pathname(parts.path)).read_bytes()


# --- hits ----------------------------------------------------------------------------------


def test_identical_call_variant_and_explicit_default_hit(
    client: Any, fake_openai: FakeOpenAI, cache: Cache
) -> None:
    first = client.images.generate(model="dall-e-3", prompt="A red fox in snow.",
                                   response_format="b64_json")
    assert isinstance(first, ImagesResponse)
    original = b64_images(first)
    assert original[0].startswith(b"\x89PNG")

    again = client.images.generate(model="dall-e-3", prompt="A red fox in snow.",
                                   response_format="b64_json")
    variant = client.images.generate(model="dall-e-3", prompt="  a RED fox in snow ",
                                     response_format="b64_json")
    explicit = client.images.generate(model="dall-e-3", prompt="a red fox in snow",
                                      quality="standard", size="1024x1024", style="vivid",
                                      n=1, response_format="b64_json")
    for hit in (again, variant, explicit):
        assert type(hit) is ImagesResponse
        assert b64_images(hit) == original
        assert hit.created == first.created
        assert hit.data is not None and first.data is not None
        assert hit.data[0].revised_prompt == first.data[0].revised_prompt
        assert hit.data[0].revised_prompt == "A fake rendering of: A red fox in snow."
    assert fake_openai.calls(IMAGES) == 1
    stats = cache.stats()
    assert (stats["requests"], stats["hits"], stats["misses"]) == (4, 3, 1)
    assert stats["by_tier"]["memory"] == 3


def test_hits_survive_a_new_cache_object_on_the_same_directory(
    openai_client: openai.OpenAI, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with Cache("wrap", directory=tmp_path) as first_cache:
        original = generate_b64(imgcache.wrap(openai_client, cache=first_cache))
    with Cache("wrap", directory=tmp_path) as second_cache:
        assert generate_b64(imgcache.wrap(openai_client, cache=second_cache)) == original
        assert second_cache.stats()["by_tier"]["disk"] == 1
    assert fake_openai.calls(IMAGES) == 1


# --- response_format="url" -------------------------------------------------------------------


def test_url_miss_stores_bytes_and_url_hit_serves_them_from_a_file(
    client: Any, fake_openai: FakeOpenAI, cache: Cache, tmp_path: Path
) -> None:
    miss = client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="url")
    assert miss.data is not None and miss.data[0].url is not None
    upstream_url = miss.data[0].url
    assert upstream_url.startswith(fake_openai.url + "/files/")
    original = httpx.get(upstream_url).content
    assert original.startswith(b"\x89PNG")

    fake_openai.expire_urls()  # upstream URLs die within hours: the cache must not keep them
    assert httpx.get(upstream_url).status_code == 404

    hit = client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="url")
    assert type(hit) is ImagesResponse
    assert hit.data is not None and hit.data[0].url is not None
    local_url = hit.data[0].url
    assert local_url.startswith("file://")
    assert file_url_bytes(local_url) == original
    assert Path(url2pathname(urlsplit(local_url).path)).is_relative_to(tmp_path)
    assert hit.data[0].revised_prompt == miss.data[0].revised_prompt

    # Omitted response_format on dall-e-3 means url; the same entry answers b64_json too.
    default = client.images.generate(model="dall-e-3", prompt="a lighthouse")
    assert default.data is not None and file_url_bytes(default.data[0].url or "") == original
    assert generate_b64(client, "a lighthouse") == [original]
    assert fake_openai.calls(IMAGES) == 1


def test_b64_miss_then_url_hit_serves_the_same_bytes(client: Any, fake_openai: FakeOpenAI) -> None:
    (original,) = generate_b64(client, "a harbour at dusk")
    hit = client.images.generate(model="dall-e-3", prompt="a harbour at dusk", response_format="url")
    assert hit.data is not None
    assert file_url_bytes(hit.data[0].url or "") == original
    assert fake_openai.calls(IMAGES) == 1


def test_url_hit_with_s3_is_a_presigned_url_serving_the_bytes(
    openai_client: openai.OpenAI, fake_openai: FakeOpenAI, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    with Cache("wrap-s3", s3_bucket=bucket, s3_endpoint_url=endpoint) as cache:
        client = imgcache.wrap(openai_client, cache=cache)
        miss = client.images.generate(model="dall-e-3", prompt="a cabin", response_format="url")
        assert miss.data is not None and miss.data[0].url is not None
        original = httpx.get(miss.data[0].url).content
        fake_openai.expire_urls()

        hit = client.images.generate(model="dall-e-3", prompt="a cabin", response_format="url")
        assert hit.data is not None and hit.data[0].url is not None
        url = hit.data[0].url
        assert url.startswith(endpoint + "/")
        assert "Signature=" in url or "X-Amz-Signature=" in url
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == original
    # A fresh process (new cache object, empty memory) gets a working URL from S3 alone.
    with Cache("wrap-s3", s3_bucket=bucket, s3_endpoint_url=endpoint) as fresh:
        client = imgcache.wrap(openai_client, cache=fresh)
        hit = client.images.generate(model="dall-e-3", prompt="a cabin", response_format="url")
        assert hit.data is not None
        assert httpx.get(hit.data[0].url or "").content == original
        assert fresh.stats()["by_tier"]["s3"] == 1
    assert fake_openai.calls(IMAGES) == 1


# --- AsyncOpenAI -----------------------------------------------------------------------------


def test_async_client_hits_and_coalesces_concurrent_calls(fake_openai: FakeOpenAI, cache: Cache) -> None:
    async def main() -> tuple[list[bytes], list[bytes], list[list[bytes]]]:
        async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test",
                                      max_retries=0) as raw:
            client = imgcache.wrap(raw, cache=cache)
            first = await client.images.generate(model="dall-e-3", prompt="a koi pond",
                                                 response_format="b64_json")
            second = await client.images.generate(model="dall-e-3", prompt="A koi pond.",
                                                  response_format="b64_json")
            assert type(second) is ImagesResponse
            fake_openai.latency = 0.2
            together = await asyncio.gather(*(
                client.images.generate(model="dall-e-3", prompt="a bamboo forest",
                                       response_format="b64_json")
                for _ in range(5)
            ))
            return b64_images(first), b64_images(second), [b64_images(r) for r in together]

    first, second, together = asyncio.run(main())
    assert first == second
    assert all(images == together[0] for images in together)
    assert together[0] != first
    assert fake_openai.calls(IMAGES) == 2
    stats = cache.stats()
    assert stats["upstream_calls"] == 2 and stats["coalesced"] == 4


# --- pass-through ----------------------------------------------------------------------------


def test_other_endpoints_pass_through_unchanged(
    client: Any, fake_openai: FakeOpenAI, cache: Cache
) -> None:
    models = client.models.list()
    assert "dall-e-3" in {m.id for m in models}
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert isinstance(chat, openai.types.chat.ChatCompletion)
    assert chat.choices[0].message.content == "fake answer #1 for: hello"
    again = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert again.choices[0].message.content == "fake answer #2 for: hello"  # not cached
    assert fake_openai.calls("/v1/chat/completions") == 2
    assert fake_openai.calls("/v1/models") == 1
    assert cache.stats()["requests"] == 0


def test_streaming_generate_is_not_cached_and_its_error_propagates(
    client: Any, fake_openai: FakeOpenAI, cache: Cache, tmp_path: Path
) -> None:
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model="gpt-image-1", prompt="a stream", stream=True)
        assert caught.value.status_code == 400
        assert "Streaming" in str(caught.value)
    assert fake_openai.calls(IMAGES) == 2
    stats = cache.stats()
    assert stats["stored"] == 0 and stats["bypassed"] == 2 and stats["upstream_errors"] == 0
    assert not list((tmp_path / "cache").rglob("e/*/*"))


# --- upstream errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "options", "error"),
    [
        (429, {"retry_after": 1}, openai.RateLimitError),
        (400, {"code": "content_policy_violation"}, openai.BadRequestError),
        (500, {}, openai.InternalServerError),
    ],
    ids=["rate-limit", "content-policy", "server-error"],
)
def test_upstream_errors_propagate_unchanged_and_are_never_cached(
    client: Any, fake_openai: FakeOpenAI, cache: Cache, tmp_path: Path,
    status: int, options: dict[str, Any], error: type[openai.APIStatusError],
) -> None:
    fake_openai.fail_next(status, path=IMAGES, **options)
    with pytest.raises(error) as caught:
        generate_b64(client, "a failing prompt")
    assert type(caught.value) is error
    assert caught.value.status_code == status
    if "code" in options:
        assert caught.value.code == options["code"]
    if "retry_after" in options:
        assert caught.value.response.headers["retry-after"] == "1"
    stats = cache.stats()
    assert stats["stored"] == 0 and stats["upstream_errors"] == 1
    assert not list((tmp_path / "cache").rglob("e/*/*"))

    ok = generate_b64(client, "a failing prompt")  # goes upstream again
    assert fake_openai.calls(IMAGES) == 2
    assert generate_b64(client, "a failing prompt") == ok  # and is cached now
    assert fake_openai.calls(IMAGES) == 2


# --- stats -----------------------------------------------------------------------------------


def test_saved_usd_is_the_price_times_the_hits(client: Any, fake_openai: FakeOpenAI, cache: Cache) -> None:
    generate_b64(client, "a tea set")
    for _ in range(3):
        generate_b64(client, "a tea set")
    generate_b64(client, "a tea set", quality="hd")  # a different entry: 0.08 per image
    generate_b64(client, "a tea set", quality="hd")
    stats = cache.stats()
    assert stats["upstream_calls"] == 2 and fake_openai.calls(IMAGES) == 2
    assert stats["hits"] == 4
    assert stats["saved_usd"] == pytest.approx(3 * DALL_E_3_STANDARD + 0.080)
    assert stats["spent_usd"] == pytest.approx(DALL_E_3_STANDARD + 0.080)


def test_unknown_models_count_calls_but_no_dollars(client: Any, fake_openai: FakeOpenAI, cache: Cache) -> None:
    generate_b64(client, "a cloud", model="some-future-model")
    generate_b64(client, "a cloud", model="some-future-model")
    stats = cache.stats()
    assert stats["hits"] == 1 and stats["upstream_calls"] == 1
    assert stats["saved_usd"] == 0 and stats["spent_usd"] == 0


# --- what is in the key ----------------------------------------------------------------------


def test_parameters_outside_the_key_do_not_cause_misses(client: Any, fake_openai: FakeOpenAI) -> None:
    original = generate_b64(client, "a violin")
    assert generate_b64(client, "a violin", user="user-42") == original
    assert generate_b64(client, "a violin", timeout=30) == original
    assert generate_b64(client, "a violin", extra_headers={"X-Trace-Id": "abc"}) == original
    assert generate_b64(client, "a violin", user="u", timeout=5.0,
                        extra_headers={"X-Other": "1"}) == original
    assert fake_openai.calls(IMAGES) == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"size": "1792x1024"},
        {"quality": "hd"},
        {"style": "natural"},
        {"model": "dall-e-2"},
        {"model": "dall-e-2", "n": 2},
    ],
    ids=["size", "quality", "style", "model", "n"],
)
def test_parameters_in_the_key_cause_misses(
    client: Any, fake_openai: FakeOpenAI, changed: dict[str, Any]
) -> None:
    base = generate_b64(client, "a violin")
    other = generate_b64(client, "a violin", **changed)
    assert other != base
    assert fake_openai.calls(IMAGES) == 2
    assert generate_b64(client, "a violin", **changed) == other  # each is cached on its own
    assert generate_b64(client, "a violin") == base
    assert fake_openai.calls(IMAGES) == 2
    if changed.get("n") == 2:
        assert len(other) == 2 and other[0] != other[1]
    if changed == {"model": "dall-e-2"}:  # n=1 is dall-e-2's default: explicit equals omitted
        assert generate_b64(client, "a violin", model="dall-e-2", n=1) == other
        assert fake_openai.calls(IMAGES) == 2


# --- namespaces ------------------------------------------------------------------------------


def test_namespaces_on_one_directory_never_share(
    openai_client: openai.OpenAI, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with Cache("tenant-a", directory=tmp_path) as a, Cache("tenant-b", directory=tmp_path) as b:
        client_a, client_b = imgcache.wrap(openai_client, cache=a), imgcache.wrap(openai_client, cache=b)
        image_a = generate_b64(client_a, "a shared prompt")
        image_b = generate_b64(client_b, "a shared prompt")
        assert image_a != image_b
        assert generate_b64(client_a, "a shared prompt") == image_a
        assert generate_b64(client_b, "a shared prompt") == image_b
    with Cache("tenant-b", directory=tmp_path, memory_bytes=0) as b_again:
        assert generate_b64(imgcache.wrap(openai_client, cache=b_again), "a shared prompt") == image_b
    assert fake_openai.calls(IMAGES) == 2


def test_namespaces_on_one_redis_never_share(
    openai_client: openai.OpenAI, fake_openai: FakeOpenAI, redis_url: str
) -> None:
    with Cache("tenant-a", redis_url=redis_url) as a, Cache("tenant-b", redis_url=redis_url) as b:
        image_a = generate_b64(imgcache.wrap(openai_client, cache=a), "a shared prompt")
        image_b = generate_b64(imgcache.wrap(openai_client, cache=b), "a shared prompt")
        assert image_a != image_b
    # Fresh cache objects (empty memory): each namespace is answered from Redis, with its own.
    with Cache("tenant-a", redis_url=redis_url) as a, Cache("tenant-b", redis_url=redis_url) as b:
        assert generate_b64(imgcache.wrap(openai_client, cache=a), "a shared prompt") == image_a
        assert generate_b64(imgcache.wrap(openai_client, cache=b), "a shared prompt") == image_b
        assert a.stats()["by_tier"]["redis"] == 1 and b.stats()["by_tier"]["redis"] == 1
    with Cache("tenant-c", redis_url=redis_url) as c:
        image_c = generate_b64(imgcache.wrap(openai_client, cache=c), "a shared prompt")
        assert image_c not in (image_a, image_b)
    assert fake_openai.calls(IMAGES) == 3


def test_with_options_keeps_the_cache(client: Any, fake_openai: FakeOpenAI) -> None:
    first = generate_b64(client)
    tuned = client.with_options(timeout=30, max_retries=0)
    assert isinstance(tuned, type(client)) and tuned.cache is client.cache
    assert generate_b64(tuned) == first
    assert fake_openai.calls(IMAGES) == 1
