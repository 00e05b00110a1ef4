"""The FakeOpenAI server, exercised through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionContentPartParam

from imgcache.testing.openai_server import FakeOpenAI

SIZE = (16, 12)
IMAGES = "/v1/images/generations"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(image_size=SIZE) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def generate_b64(client: openai.OpenAI, prompt: str = "a red cat", **kwargs: Any) -> list[bytes]:
    response = client.images.generate(prompt=prompt, response_format="b64_json", **kwargs)
    assert response.data is not None
    return [base64.b64decode(image.b64_json or "") for image in response.data]


def test_b64_image_is_png_of_configured_size(client: openai.OpenAI) -> None:
    (png,) = generate_b64(client)
    assert png_size(png) == SIZE


def test_requested_size_used_without_override(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.image_size = None
    (png,) = generate_b64(client, size="64x48")
    assert png_size(png) == (64, 48)
    (png,) = generate_b64(client, size="auto")
    assert png_size(png) == (1024, 1024)


def test_url_response_serves_png_until_expired(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    response = client.images.generate(prompt="a red cat", response_format="url")
    assert response.data is not None
    url = response.data[0].url
    assert url is not None and url.startswith(fake.url + "/files/")
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert png_size(fetched.content) == SIZE
    fake.expire_urls()
    assert httpx.get(url).status_code == 404


def test_identical_calls_give_different_bytes(client: openai.OpenAI) -> None:
    assert generate_b64(client) != generate_b64(client)


def test_n_images_are_distinct(client: openai.OpenAI) -> None:
    images = generate_b64(client, n=3)
    assert len(images) == 3 and len(set(images)) == 3


def test_gpt_image_model_reports_usage_and_settings(client: openai.OpenAI) -> None:
    response = client.images.generate(model="gpt-image-1", prompt="a red cat", quality="low")
    assert response.usage is not None and response.usage.total_tokens > 0
    assert (response.size, response.quality) == ("16x12", "low")
    assert (response.output_format, response.background) == ("png", "opaque")
    assert response.data is not None and response.data[0].revised_prompt is None


def test_dalle3_includes_revised_prompt(client: openai.OpenAI) -> None:
    response = client.images.generate(model="dall-e-3", prompt="a red cat")
    assert response.data is not None and response.data[0].revised_prompt
    assert response.usage is None


def test_missing_prompt_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        # omit passes the SDK's argument check but leaves prompt out of the body
        client.images.generate(prompt=openai.omit)  # type: ignore[call-overload]
    assert info.value.code == "missing_required_parameter"
    assert info.value.param == "prompt"


@pytest.mark.parametrize("n", [0, 11])
def test_n_out_of_range_is_bad_request(client: openai.OpenAI, n: int) -> None:
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="a red cat", n=n)


def test_rate_limit_carries_retry_after(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(429, retry_after=1)
    with pytest.raises(openai.RateLimitError) as info:
        client.images.generate(prompt="a red cat")
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limit_exceeded"
    assert len(generate_b64(client)) == 1  # the failure was consumed


def test_server_error_then_recovery(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(500, count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.images.generate(prompt="a red cat")
    generate_b64(client)
    assert fake.calls(IMAGES) == 3


def test_content_policy_violation(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(400, code="content_policy_violation")
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="something forbidden")
    assert info.value.code == "content_policy_violation"
    assert "safety system" in info.value.message


def test_failure_scoped_to_path(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(503, path="/images/generations")
    client.models.list()  # unaffected
    with pytest.raises(openai.InternalServerError):
        client.images.generate(prompt="a red cat")


def test_sdk_retries_are_visible_in_calls(fake: FakeOpenAI) -> None:
    fake.fail_next(429, retry_after=0.01)
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=1) as sdk:
        sdk.images.generate(prompt="a red cat")
    assert fake.calls(IMAGES) == 2


def test_chat_completion_echoes_and_counts_images(client: openai.OpenAI) -> None:
    image: ChatCompletionContentPartParam = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image, image]}
        ],
    )
    text = completion.choices[0].message.content
    assert text is not None and "for: what is this?" in text and "images: 2" in text
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_chat_streaming_yields_chunks(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "describe a cat"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("fake answer #") and text.endswith("for: describe a cat")
    assert chunks[-1].usage is not None


def test_models_list(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"gpt-image-1", "dall-e-3"} <= ids
    assert client.models.retrieve("dall-e-2").id == "dall-e-2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_route_is_openai_shaped_404(fake: FakeOpenAI) -> None:
    response = httpx.post(fake.base_url + "/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_requests_are_recorded_and_reset(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    generate_b64(client, prompt="recorded", n=2)
    client.models.list()
    assert fake.calls() == 2
    assert fake.calls(IMAGES) == fake.calls("/images/generations") == 1
    (request, _) = fake.requests
    assert (request.method, request.path) == ("POST", IMAGES)
    assert request.body == {"prompt": "recorded", "n": 2, "response_format": "b64_json"}
    assert request.headers["authorization"] == "Bearer test"
    fake.reset()
    assert fake.calls() == 0 and fake.requests == []


def test_async_client(fake: FakeOpenAI) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="test") as sdk:
            responses = await asyncio.gather(
                *(sdk.images.generate(prompt="a red cat") for _ in range(3))
            )
        return [r.data[0].b64_json or "" for r in responses if r.data]

    images = asyncio.run(run())
    assert len(set(images)) == 3
    assert fake.calls(IMAGES) == 3


def test_latency_is_applied(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.latency = 0.2
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.05).models.list()
