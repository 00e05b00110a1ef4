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
from openai.types.responses import Response, ResponseInputItemParam

from imgcache.pricing import image_tokens
from imgcache.testing import (
    MAX_IMAGE_BYTES,
    FakeOpenAI,
    FormFile,
    fake_png,
    image_digest,
)

from _helpers import data_url

SIZE = (16, 12)
IMAGES = "/v1/images/generations"
EDITS = "/v1/images/edits"
RED = fake_png(1024, 1024, "red")  # 765 tokens at high detail on gpt-4o
BLUE = fake_png(64, 48, "blue")  # 255 at high detail, 85 at low


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


# ------------------------------------------------------------------ vision inputs


def image_part(url: str, detail: Any = "auto") -> ChatCompletionContentPartParam:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def ask(
    client: openai.OpenAI,
    *images: ChatCompletionContentPartParam,
    text: str = "what is this?",
    model: str = "gpt-4o",
) -> tuple[str, int]:
    """The answer text and prompt tokens of a chat completion with these image parts."""
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": text}, *images]}],
    )
    assert completion.usage is not None
    return completion.choices[0].message.content or "", completion.usage.prompt_tokens


def test_image_digest_is_a_sha256_prefix() -> None:
    assert image_digest(b"abc") == "ba7816bf8f01"  # sha256("abc") = ba7816bf8f01cfea...


def test_chat_answer_names_each_image_by_digest(client: openai.OpenAI) -> None:
    text, prompt_tokens = ask(
        client, image_part(data_url(RED), "high"), image_part(data_url(BLUE), "low")
    )
    assert text.startswith("fake answer #1 for: what is this? [images: ")
    assert text.endswith(f"[images: {image_digest(RED)}, {image_digest(BLUE)}]")
    assert image_digest(RED) != image_digest(BLUE)
    assert prompt_tokens == 3 + 765 + 85  # "what is this?" as 3 tokens, then the two images


def test_chat_answer_follows_image_content_not_url(client: openai.OpenAI) -> None:
    jpeg_named = data_url(RED, "image/jpeg")  # the declared type does not change the digest
    first, _ = ask(client, image_part(data_url(RED)))
    second, _ = ask(client, image_part(jpeg_named))
    third, _ = ask(client, image_part(data_url(BLUE)))
    assert image_digest(RED) in first and image_digest(RED) in second
    assert image_digest(BLUE) in third and image_digest(RED) not in third


@pytest.mark.parametrize(
    ("model", "detail"), [("gpt-4.1-mini", "high"), ("o1", "low"), ("gpt-5", "auto")]
)
def test_chat_image_tokens_follow_the_pricing_formula(
    client: openai.OpenAI, model: str, detail: str
) -> None:
    _, plain = ask(client, model=model)
    _, with_image = ask(client, image_part(data_url(RED), detail), model=model)
    assert with_image - plain == image_tokens(1024, 1024, detail=detail, model=model)


def test_unknown_model_counts_85_per_image(client: openai.OpenAI) -> None:
    _, plain = ask(client, model="fake-vision")
    _, with_image = ask(client, image_part(data_url(RED)), model="fake-vision")
    assert with_image - plain == 85


def test_chat_with_hosted_image_url(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(BLUE)
    assert url.startswith(fake.url + "/hosted/")
    text, _ = ask(client, image_part(url))
    assert text.endswith(f"[images: {image_digest(BLUE)}]")
    assert fake.calls(url) == 1  # the server downloaded it once
    assert fake.calls("/chat/completions") == 1


URL_PARAM = "messages[0].content[1].image_url.url"
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'/>"


@pytest.mark.parametrize(
    ("url", "code", "param"),
    [
        ("data:image/png;base64,%%%not-base64%%%", "invalid_value", URL_PARAM),
        ("data:image/png;base64,", "invalid_value", URL_PARAM),
        ("data:text/plain;base64,aGk=", "invalid_value", URL_PARAM),
        ("just some text", "invalid_value", URL_PARAM),
        (data_url(b"hello, not an image"), "invalid_image_format", None),
        (data_url(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "invalid_image_format", None),  # truncated
        (data_url(SVG, "image/svg+xml"), "invalid_image_format", None),
    ],
)
def test_malformed_image_is_bad_request(
    client: openai.OpenAI, url: str, code: str, param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(url))
    assert (info.value.code, info.value.param) == (code, param)
    assert info.value.type == "invalid_request_error"


def test_malformed_image_message_matches_the_api(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(data_url(b"not an image")))
    message = info.value.body["message"]  # type: ignore[index]
    assert message.startswith("You uploaded an unsupported image.")
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part("data:image/png;base64,"))
    assert "Expected a base64-encoded data URL with an image MIME type" in info.value.message


def test_bad_detail_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(data_url(BLUE), "medium"))
    assert info.value.param == "messages[0].content[1].image_url.detail"


def test_non_loopback_url_is_refused_without_download(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part("https://example.com/cat.png"))
    message = info.value.body["message"]  # type: ignore[index]
    assert message.startswith("Error while downloading https://example.com/cat.png.")
    assert (info.value.code, info.value.param) == ("invalid_value", "url")


def test_missing_hosted_file_is_a_download_error(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(BLUE)
    fake.unhost(url)
    with pytest.raises(openai.BadRequestError, match="Error while downloading"):
        ask(client, image_part(url))
    assert httpx.get(url).status_code == 404


def test_slow_hosted_file_times_out(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(BLUE, delay=5.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=0.05)
    fake.fetch_timeout = 0.05
    with pytest.raises(openai.BadRequestError, match="Error while downloading"):
        ask(client, image_part(url))


def test_huge_hosted_file(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    padded = fake.host_file(BLUE, size=len(BLUE) + 200_000)
    response = httpx.get(padded)
    assert response.headers["content-length"] == str(len(BLUE) + 200_000)
    assert response.content == BLUE + bytes(200_000)
    text, _ = ask(client, image_part(padded))  # trailing bytes after a PNG still decode
    assert image_digest(response.content) in text
    too_big = fake.host_file(BLUE, size=MAX_IMAGE_BYTES + 1)
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, image_part(too_big))
    assert info.value.code == "invalid_image_format"


def test_named_hosted_file_can_change(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(RED, name="cat.png")
    assert fake.host_file(BLUE, "image/png", name="cat.png") == url
    text, _ = ask(client, image_part(url))
    assert image_digest(BLUE) in text and image_digest(RED) not in text
    with pytest.raises(ValueError):
        fake.host_file(BLUE, name="../etc")


def test_hosted_files_survive_expire_urls_but_not_reset(fake: FakeOpenAI) -> None:
    url = fake.host_file(BLUE, "image/webp")
    fake.expire_urls()
    response = httpx.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "image/webp")
    fake.reset()
    assert httpx.get(url).status_code == 404


def test_unscoped_failures_skip_hosted_files(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(BLUE)
    fake.fail_next(500)
    assert httpx.get(url).status_code == 200
    with pytest.raises(openai.InternalServerError):
        ask(client, image_part(url))
    fake.fail_next(503, path=url)  # a failing remote host
    with pytest.raises(openai.BadRequestError, match="Error while downloading"):
        ask(client, image_part(url))


# --------------------------------------------------------------------- responses


def image_input(url: str, text: str = "what is this?") -> list[ResponseInputItemParam]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": text},
                {"type": "input_image", "image_url": url, "detail": "high"},
            ],
        }
    ]


def test_responses_output_text_names_the_image(client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o", input=image_input(data_url(RED)))
    assert response.output_text.startswith("fake answer #1 for: what is this?")
    assert response.output_text.endswith(f"[images: {image_digest(RED)}]")
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == 3 + 765
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_responses_body_validates_strictly(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input=image_input(data_url(BLUE)), instructions="be brief"
    )
    body = raw.http_response.json()
    response = Response.model_validate(body)  # pydantic validation, not the SDK's lenient build
    assert response.output[0].type == "message"
    assert body["output"][0]["content"][0]["annotations"] == []
    assert body["instructions"] == "be brief"


def test_responses_string_input_and_instructions(client: openai.OpenAI) -> None:
    plain = client.responses.create(model="gpt-4o-mini", input="describe a cat")
    assert plain.output_text == "fake answer #1 for: describe a cat"
    instructed = client.responses.create(
        model="gpt-4o-mini", input="describe a cat", instructions="x" * 40
    )
    assert plain.usage is not None and instructed.usage is not None
    assert instructed.usage.input_tokens - plain.usage.input_tokens == 10


def test_responses_with_hosted_image(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    url = fake.host_file(BLUE)
    response = client.responses.create(model="gpt-4.1", input=image_input(url))
    assert image_digest(BLUE) in response.output_text
    assert fake.calls(url) == 1


def test_responses_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4o", input=image_input(data_url(b"nope")))
    assert info.value.code == "invalid_image_format"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4o", input=image_input("data:image/png;base64,!"))
    assert info.value.param == "input[0].content[1].image_url"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=openai.omit, input="hi")  # type: ignore[call-overload]
    assert info.value.param == "model"


def test_responses_stream_events(client: openai.OpenAI) -> None:
    stream = client.responses.create(model="gpt-4o", input=image_input(data_url(RED)), stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert kinds.count("response.output_text.delta") > 3
    final = events[-1]
    assert final.type == "response.completed"
    assert deltas == final.response.output_text
    assert deltas.endswith(f"[images: {image_digest(RED)}]")


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="describe a cat") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "fake answer #1 for: describe a cat"


def test_responses_failure_scoped_to_path(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(500, path="/responses")
    ask(client)  # chat is unaffected
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o", input="hi")
    assert fake.calls("/responses") == 1


# ------------------------------------------------------------------------- edits


def png_file(data: bytes, name: str = "in.png") -> tuple[str, bytes, str]:
    return (name, data, "image/png")


def edit_b64(client: openai.OpenAI, **kwargs: Any) -> list[bytes]:
    response = client.images.edit(prompt="make it blue", response_format="b64_json", **kwargs)
    assert response.data is not None
    return [base64.b64decode(image.b64_json or "") for image in response.data]


def test_edit_one_image(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    (png,) = edit_b64(client, image=png_file(RED))
    assert png_size(png) == SIZE
    (request,) = fake.requests
    assert (request.method, request.path, request.body) == ("POST", EDITS, None)
    assert request.form is not None
    (upload,) = request.form["image"]
    assert isinstance(upload, FormFile) and upload == RED
    assert (upload.filename, upload.content_type) == ("in.png", "image/png")
    assert request.form["prompt"] == ["make it blue"]
    assert RED in request.raw_body


def test_edits_differ_on_every_call(client: openai.OpenAI) -> None:
    first = edit_b64(client, image=png_file(RED), n=2)
    second = edit_b64(client, image=png_file(RED), n=2)
    assert len(set(first + second)) == 4


def test_edit_several_images_with_mask(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    response = client.images.edit(
        model="gpt-image-1",
        image=[png_file(RED, "a.png"), png_file(BLUE, "b.png")],
        mask=png_file(fake_png(64, 48, "mask", alpha=True), "mask.png"),
        prompt="merge them",
        quality="low",
    )
    assert response.data is not None and len(response.data) == 1
    assert response.data[0].b64_json and response.data[0].revised_prompt is None
    assert response.usage is not None
    images = response.usage.input_tokens_details.image_tokens
    assert images == 765 + 255  # the inputs, counted like gpt-4o at high detail
    assert response.usage.input_tokens == images + response.usage.input_tokens_details.text_tokens
    form = fake.requests[-1].form
    assert form is not None
    assert [bytes(f) for f in form["image[]"]] == [RED, BLUE]
    assert "mask" in form and form["quality"] == ["low"]


def test_edit_url_response(client: openai.OpenAI) -> None:
    response = client.images.edit(image=png_file(BLUE), prompt="make it red", response_format="url")
    assert response.data is not None and response.data[0].url
    assert png_size(httpx.get(response.data[0].url).content) == SIZE


def test_edit_without_image_is_bad_request(fake: FakeOpenAI) -> None:
    response = httpx.post(fake.base_url + "/images/edits", files={"prompt": (None, "make it blue")})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("missing_required_parameter", "image")


def test_edit_without_prompt_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=png_file(RED), prompt=openai.omit)  # type: ignore[call-overload]
    assert info.value.param == "prompt"


def test_edit_rejects_untyped_and_non_image_uploads(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=RED, prompt="x")  # bare bytes go up as application/octet-stream
    assert (info.value.code, info.value.param) == ("unsupported_file_mimetype", "image")
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=png_file(b"not a png"), prompt="x")
    assert info.value.code == "invalid_image_format"


def test_edit_failure_scoped_to_path(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_next(429, path="/images/edits", retry_after=1)
    generate_b64(client)  # unaffected
    with pytest.raises(openai.RateLimitError):
        client.images.edit(image=png_file(RED), prompt="x")
    assert len(edit_b64(client, image=png_file(RED))) == 1
    assert fake.calls(EDITS) == 2


def test_async_vision_and_edits(fake: FakeOpenAI) -> None:
    url = fake.host_file(RED)

    async def run() -> tuple[list[str], list[str]]:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="test") as sdk:
            responses = await asyncio.gather(
                *(sdk.responses.create(model="gpt-4o", input=image_input(url)) for _ in range(2))
            )
            edits = await asyncio.gather(
                *(sdk.images.edit(image=png_file(BLUE), prompt="x") for _ in range(2))
            )
        images = [edit.data[0].b64_json or "" for edit in edits if edit.data]
        return [response.output_text for response in responses], images

    texts, images = asyncio.run(run())
    assert all(image_digest(RED) in text for text in texts) and len(set(texts)) == 2
    assert len(set(images)) == 2
    assert fake.calls(url) == 2
