"""``imgcache serve``: the caching proxy driven by the real ``openai`` SDK (sync and async) and by
raw HTTP, in front of the fake OpenAI server (or a scripted loopback upstream where a test needs
exact bytes or a held stream)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

import imgcache
from imgcache import Cache
from imgcache.adapters.openai import generate_request
from imgcache.proxy import ProxyConfig, ProxyServer
from imgcache.proxy.calls import form_fields
from imgcache.proxy.tenants import key_namespace
from imgcache.testing import FakeOpenAI, image_digest
from imgcache.testing.servers import free_port

from _helpers import bow_options, data_url

pytestmark = pytest.mark.cache_options("proxy", semantic=False)  # `cache`, on `cache_dir`

IMAGES = "/v1/images/generations"
EDITS = "/v1/images/edits"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
KEY_A = "sk-test-tenant-a-0123456789abcdef"
KEY_B = "sk-test-tenant-b-fedcba9876543210"


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def start(fake_openai: FakeOpenAI, cache: Cache) -> Iterator[Callable[..., ProxyServer]]:
    """``start(**config)``: a proxy in front of the fake server over ``cache``, stopped after."""
    running: list[ProxyServer] = []

    def start(cache_: Cache | None = None, **config: Any) -> ProxyServer:
        config.setdefault("upstream", fake_openai.base_url)
        server = ProxyServer(ProxyConfig(**config), cache_ or cache).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def proxy(start: Callable[..., ProxyServer]) -> ProxyServer:
    return start()


def sdk(proxy: ProxyServer, key: str = KEY_A, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, **options)


def generate(client: Any, prompt: str = "a red fox in snow", **kwargs: Any) -> tuple[Any, str]:
    """(ImagesResponse, x-imgcache) of a generation through ``client``."""
    kwargs.setdefault("model", "dall-e-3")
    kwargs.setdefault("response_format", "b64_json")
    raw = client.images.with_raw_response.generate(prompt=prompt, **kwargs)
    return raw.parse(), raw.headers.get("x-imgcache")


def image_of(response: Any, index: int = 0) -> bytes:
    return base64.b64decode(response.data[index].b64_json)


def png(seed: int, size: int = 48) -> bytes:
    img = Image.new("RGB", (size, size), (seed * 40 % 256, 90, 160))
    for x in range(size // 2):
        img.putpixel((x, x), (255, 255, seed % 256))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def vision_messages(image: str, text: str = "What is in this picture?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]}]


def error_shape(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# -- hits and misses ----------------------------------------------------------------------------------


def test_generation_miss_then_hits_for_repeats_and_variants(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)
    first, how = generate(client, "A red fox in snow.")
    assert how == "miss" and image_of(first).startswith(b"\x89PNG")
    again, how_again = generate(client, "A red fox in snow.")
    variant, how_variant = generate(client, "  a RED fox in snow ", quality="standard", size="1024x1024")
    assert how_again == how_variant == "hit; tier=memory; match=exact"
    for hit in (again, variant):
        assert image_of(hit) == image_of(first)
        assert hit.created == first.created and hit.data[0].revised_prompt == first.data[0].revised_prompt
    assert fake_openai.calls(IMAGES) == 1
    other, how_other = generate(client, "a red fox in snow", model="dall-e-2")
    assert how_other == "miss" and fake_openai.calls(IMAGES) == 2


def test_url_hits_are_served_by_the_proxy_for_the_entry_lifetime(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)
    first, _ = generate(client, "a lighthouse", response_format="url")
    upstream_url = first.data[0].url
    assert upstream_url.startswith(fake_openai.url)  # a miss is the upstream's answer as it came
    original = httpx.get(upstream_url).content
    hit, how = generate(client, "a lighthouse", response_format="url")
    assert how.startswith("hit")
    url = hit.data[0].url
    assert url.startswith(proxy.url + "/imgcache/files/") and url.endswith(".png")
    fake_openai.expire_urls()
    served = httpx.get(url)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == original
    as_b64, _ = generate(client, "a lighthouse")  # the same entry in the other format
    assert image_of(as_b64) == original
    token = url.rsplit("/", 1)[1].split(".")[0]
    altered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    missing = httpx.get(url.replace(token, altered))
    assert missing.status_code == 404 and error_shape(missing.json())
    assert httpx.get(proxy.url + "/imgcache/files/proxy/" + "0" * 64 + "/0.png").status_code == 404
    assert fake_openai.calls(IMAGES) == 1


def test_the_file_route_refuses_an_alias_of_an_invalidated_result(start: Callable[..., ProxyServer],
                                                                  cache_dir: Path) -> None:
    """A paraphrase's hit is an alias of the entry it matched; its file URL must stop serving
    the picture once that entry's result is invalidated, like every other read."""
    with Cache("aliases", directory=cache_dir, semantic=bow_options()) as semantic_cache:
        proxy = start(semantic_cache, namespace_mode="shared", namespace="aliases")
        client = sdk(proxy)
        made, how = generate(client, "a red fox in snow", response_format="url")
        assert how == "miss"
        alias, how = generate(client, "a red fox in the snow", response_format="url")
        assert how.startswith("hit") and "match=semantic" in how
        url = alias.data[0].url
        assert url.startswith(proxy.url + "/imgcache/files/") and httpx.get(url).status_code == 200
        semantic_cache.delete(generate_request({"model": "dall-e-3", "prompt": "a red fox in snow",
                                                "response_format": "url"}))
        assert httpx.get(url).status_code == 404
        again, how = generate(client, "a red fox in the snow", response_format="url")
        assert how == "miss"  # the alias is refused too: the paraphrase is made anew


def test_library_and_proxy_share_keys_both_ways(start: Callable[..., ProxyServer], fake_openai: FakeOpenAI,
                                                cache_dir: Path) -> None:
    proxy = start(namespace_mode="shared", namespace="team")
    through_proxy = sdk(proxy)
    with Cache("team", directory=cache_dir, semantic=False) as library_cache:
        library = imgcache.wrap(openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0),
                                cache=library_cache)
        made, how = generate(through_proxy, "a castle on a hill", size="1024x1024")
        assert how == "miss"
        assert image_of(library.images.generate(model="dall-e-3", prompt="A castle on a hill.",
                                                response_format="b64_json")) == image_of(made)
        assert library_cache.stats()["by_tier"]["disk"] == 1
        made_by_library = library.images.generate(model="dall-e-3", prompt="a river at dawn", quality="hd",
                                                  response_format="b64_json", extra_body={"seed": 7})
        hit, how = generate(through_proxy, "a river at dawn", quality="hd", extra_body={"seed": 7})
        assert how == "hit; tier=disk; match=exact" and image_of(hit) == image_of(made_by_library)
        assert fake_openai.calls(IMAGES) == 2
    body = {"model": "dall-e-3", "prompt": "a river at dawn", "quality": "hd", "seed": 7}
    assert generate_request(body).key == generate_request(
        {"model": "dall-e-3", "prompt": "a river at dawn", "quality": "hd", "extra_body": {"seed": 7}}).key


def test_per_key_namespace_is_the_library_namespace_of_the_key_hash(proxy: ProxyServer, fake_openai: FakeOpenAI,
                                                                    cache_dir: Path) -> None:
    made, _ = generate(sdk(proxy, KEY_A), "a paper boat")
    namespace = key_namespace("proxy", KEY_A)
    assert KEY_A not in namespace and namespace.startswith("proxy.k")
    with Cache(namespace, directory=cache_dir, semantic=False) as library_cache:
        library = imgcache.wrap(openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY_A, max_retries=0),
                                cache=library_cache)
        again = library.images.generate(model="dall-e-3", prompt="a paper boat", response_format="b64_json")
    assert image_of(again) == image_of(made) and fake_openai.calls(IMAGES) == 1


def test_edits_multipart_hit_and_share_keys_with_the_library(start: Callable[..., ProxyServer],
                                                             fake_openai: FakeOpenAI, cache_dir: Path) -> None:
    proxy = start(namespace_mode="shared", namespace="edits")
    client = sdk(proxy)
    room, mask = png(1), png(2)
    kwargs = {"prompt": "add a lamp", "model": "gpt-image-1", "n": 2, "output_compression": 100}
    first = client.images.with_raw_response.edit(image=("room.png", room, "image/png"),
                                                 mask=("mask.png", mask, "image/png"), **kwargs)
    assert first.headers["x-imgcache"] == "miss"
    again = client.images.with_raw_response.edit(image=("other-name.png", room, "image/png"),
                                                 mask=("mask.png", mask, "image/png"), **kwargs)
    assert again.headers["x-imgcache"].startswith("hit")
    assert [d.b64_json for d in again.parse().data] == [d.b64_json for d in first.parse().data]
    sent = fake_openai.requests[-1].form
    assert sent is not None and bytes(sent["image"][0]) == room  # the multipart body went as it came
    with Cache("edits", directory=cache_dir, semantic=False) as library_cache:
        library = imgcache.wrap(openai.OpenAI(base_url=fake_openai.base_url, api_key="x", max_retries=0),
                                cache=library_cache)
        hit = library.images.edit(image=("room.png", room, "image/png"), mask=("mask.png", mask, "image/png"),
                                  **kwargs)
        assert [d.b64_json for d in hit.data] == [d.b64_json for d in first.parse().data]
        library.images.edit(image=[("a.png", room, "image/png"), ("b.png", mask, "image/png")],
                            prompt="merge them", model="gpt-image-1")
    several = client.images.with_raw_response.edit(
        image=[("a.png", room, "image/png"), ("b.png", mask, "image/png")], prompt="Merge them.", model="gpt-image-1")
    assert several.headers["x-imgcache"].startswith("hit")
    assert client.images.with_raw_response.edit(image=("room.png", room, "image/png"), prompt="add a sofa",
                                                model="gpt-image-1").headers["x-imgcache"] == "miss"
    assert fake_openai.calls(EDITS) == 3


def test_chat_and_responses_with_images_hit(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)
    picture = png(3)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=vision_messages(data_url(picture)))
    assert first.headers["x-imgcache"] == "miss"
    answer = first.parse().choices[0].message.content
    assert image_digest(picture) in answer
    again = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=vision_messages(data_url(picture), "What is in  this picture?"))
    assert again.headers["x-imgcache"] == "hit; tier=memory; match=exact"
    assert again.parse().choices[0].message.content == answer and again.parse().id == first.parse().id
    text_only = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert text_only.headers["x-imgcache"] == "bypass; reason=text-only"
    assert fake_openai.calls(CHAT) == 2

    items = [{"role": "user", "content": [{"type": "input_text", "text": "Describe it."},
                                          {"type": "input_image", "image_url": data_url(picture)}]}]
    made = client.responses.with_raw_response.create(model="gpt-4o", input=items)
    hit = client.responses.with_raw_response.create(model="gpt-4o", input=items)
    assert (made.headers["x-imgcache"], hit.headers["x-imgcache"]) == ("miss", "hit; tier=memory; match=exact")
    assert hit.parse().output_text == made.parse().output_text
    assert fake_openai.calls(RESPONSES) == 1


def test_remote_image_url_is_keyed_by_url_and_forwarded_unchanged_by_default(
        proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    picture = png(4)
    url = fake_openai.host_file(picture)
    client = sdk(proxy)
    first = client.chat.completions.create(model="gpt-4o", messages=vision_messages(url))
    chat = [r for r in fake_openai.requests if r.path == CHAT][-1]
    assert chat.body["messages"][0]["content"][1]["image_url"]["url"] == url  # the upstream fetched it
    assert client.chat.completions.create(model="gpt-4o", messages=vision_messages(url)) == first
    assert fake_openai.calls(CHAT) == 1 and fake_openai.calls(url) == 1  # only the upstream's fetch


def test_remote_image_is_fetched_once_and_sent_as_the_keyed_bytes_when_allowed(
        start: Callable[..., ProxyServer], fake_openai: FakeOpenAI) -> None:
    proxy = start(fetch_remote=True, fetch_allow=("127.0.0.0/8",))
    picture = png(4)
    url = fake_openai.host_file(picture)
    client = sdk(proxy)
    first = client.chat.completions.create(model="gpt-4o", messages=vision_messages(url))
    sent = fake_openai.requests[-1].body["messages"][0]["content"][1]["image_url"]["url"]
    assert sent == data_url(picture)  # what was keyed is what the API saw
    assert client.chat.completions.create(model="gpt-4o", messages=vision_messages(data_url(picture))) == first
    assert fake_openai.calls(CHAT) == 1 and fake_openai.calls(url) == 1


def test_async_sdk_and_concurrent_identical_requests_make_one_upstream_call(
        proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    fake_openai.latency = 0.5

    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key=KEY_A, max_retries=0) as client:
            calls = [client.images.generate(model="dall-e-3", prompt="a busy harbour", response_format="b64_json")
                     for _ in range(8)]
            results = await asyncio.gather(*calls)
            results.append(await client.images.generate(model="dall-e-3", prompt="A busy harbour!",
                                                        response_format="b64_json"))
            return results

    results = asyncio.run(run())
    assert fake_openai.calls(IMAGES) == 1
    assert len({image_of(r) for r in results}) == 1
    with proxy.proxy.tenants.lease(key_namespace("proxy", KEY_A)) as tenant:  # the key's namespace
        figures = tenant.stats()
    assert figures["upstream_calls"] == 1 and figures["hits"] == 8 and figures["coalesced"] >= 1


# -- forwarding --------------------------------------------------------------------------------------


def test_uncached_endpoints_are_forwarded_unchanged(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)
    direct = openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY_A, max_retries=0)
    assert client.models.list().data == direct.models.list().data
    assert client.models.retrieve("dall-e-3") == direct.models.retrieve("dall-e-3")
    response = httpx.get(proxy.base_url + "/models/dall-e-3", params={"x": "1 2"},
                         headers={"authorization": f"Bearer {KEY_A}", "x-custom": "kept",
                                  "x-imgcache-control": "no-store", "connection": "keep-alive, x-hop",
                                  "x-hop": "dropped"})
    assert response.headers["x-imgcache"] == "bypass; reason=endpoint"
    seen = fake_openai.requests[-1]
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/models/dall-e-3", "x=1+2")
    assert seen.headers["authorization"] == f"Bearer {KEY_A}" and seen.headers["x-custom"] == "kept"
    assert seen.headers["host"] == f"{fake_openai.host}:{fake_openai.port}"
    assert "x-imgcache-control" not in seen.headers and "x-hop" not in seen.headers
    with pytest.raises(openai.NotFoundError) as caught:  # a 404 passes through with its body
        client.models.retrieve("no-such-model")
    assert caught.value.status_code == 404 and caught.value.body["code"] == "model_not_found"
    posted = httpx.post(proxy.base_url + "/embeddings", json={"input": "x"}, headers={"x-trace": "1"})
    assert posted.status_code == 404 and fake_openai.requests[-1].body == {"input": "x"}
    assert httpx.get(proxy.url + "/elsewhere").status_code == 404  # only /v1 is the API


def test_streaming_passes_through_uncached(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)
    picture = data_url(png(5))
    texts = []
    for _ in range(2):
        stream = client.chat.completions.create(model="gpt-4o", messages=vision_messages(picture), stream=True,
                                                stream_options={"include_usage": True})
        texts.append("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
    assert texts[0].startswith("fake answer #1") and texts[1].startswith("fake answer #2")
    events = list(client.responses.create(model="gpt-4o", input="hello", stream=True))
    assert events[-1].type == "response.completed"
    assert fake_openai.calls(CHAT) == 2 and fake_openai.calls(RESPONSES) == 1


# -- a scripted upstream: exact bytes, compression, a held stream ------------------------------------


class Scripted:
    """A loopback upstream answering from ``replies`` (path -> (status, headers, body)) and
    streaming ``/v1/chat/completions`` in two chunks with a gate between them."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.gate = threading.Event()
        self.gate_was_open: bool | None = None
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                scripted.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path == "/v1/chat/completions":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for part in (b"data: first\n\n", None, b"data: second\n\n", b""):
                        if part is None:
                            scripted.gate_was_open = scripted.gate.wait(10)
                            continue
                        self.wfile.write(b"%X\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                    return
                status, headers, reply = scripted.replies[self.path]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    upstream = Scripted()
    yield upstream
    upstream.close()


def test_miss_is_the_upstream_bytes_and_a_hit_the_same_json(start: Callable[..., ProxyServer],
                                                            scripted: Scripted) -> None:
    proxy = start(upstream=scripted.base_url)
    image = png(6)
    answer = {"created": 1700000000, "data": [{"b64_json": base64.b64encode(image).decode(),
                                               "revised_prompt": "Un renard roux — «neige»"}]}
    exact = json.dumps(answer, indent=2, ensure_ascii=False).encode() + b"\n"
    scripted.replies["/v1/images/generations"] = (200, {"content-type": "application/json",
                                                        "x-request-id": "req_1"}, exact)
    request = {"model": "dall-e-3", "prompt": "a fox", "response_format": "b64_json"}
    sent = json.dumps(request, indent=1).encode()
    headers = {"authorization": f"Bearer {KEY_A}", "content-type": "application/json"}
    miss = httpx.post(proxy.base_url + "/images/generations", content=sent, headers=headers)
    assert miss.headers["x-imgcache"] == "miss" and miss.content == exact
    assert miss.headers["x-request-id"] == "req_1"
    hit = httpx.post(proxy.base_url + "/images/generations", json=request, headers=headers)
    assert hit.headers["x-imgcache"].startswith("hit") and hit.json() == answer
    assert len(scripted.requests) == 1
    assert scripted.requests[0][2] == sent  # the request body went as it came

    compressed = gzip.compress(exact)
    scripted.replies["/v1/images/generations"] = (200, {"content-type": "application/json",
                                                        "content-encoding": "gzip"}, compressed)
    request["prompt"] = "a hare"
    with httpx.stream("POST", proxy.base_url + "/images/generations", json=request,
                      headers={**headers, "accept-encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert b"".join(response.iter_raw()) == compressed  # relayed as sent, still compressed
    assert scripted.requests[-1][1]["accept-encoding"] == "gzip"
    request["prompt"] = "a stoat"  # offered only what the proxy can decode, so that it can store it
    httpx.post(proxy.base_url + "/images/generations", json=request,
               headers={**headers, "accept-encoding": "zstd-unknown, gzip;q=0.8"})
    assert scripted.requests[-1][1]["accept-encoding"] == "gzip;q=0.8"
    hit = httpx.post(proxy.base_url + "/images/generations", json=request, headers=headers)
    assert hit.headers["x-imgcache"].startswith("hit") and hit.json() == answer  # stored decoded


def test_a_streamed_answer_is_relayed_as_it_comes(start: Callable[..., ProxyServer], scripted: Scripted) -> None:
    proxy = start(upstream=scripted.base_url)
    body = {"model": "gpt-4o", "stream": True, "messages": vision_messages(data_url(png(7)))}
    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=body, timeout=30) as response:
        assert response.headers["x-imgcache"] == "bypass; reason=stream"
        chunks = response.iter_raw()
        first = next(chunks)
        assert first == b"data: first\n\n"  # arrived while the upstream still held the rest
        scripted.gate.set()
        rest = b"".join(chunks)
    assert rest == b"data: second\n\n"
    assert scripted.gate_was_open is True


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500])
def test_upstream_errors_pass_through_uncached(proxy: ProxyServer, fake_openai: FakeOpenAI, status: int) -> None:
    client = sdk(proxy)
    fake_openai.fail_next(status, retry_after=1 if status == 429 else None)
    with pytest.raises(openai.APIStatusError) as caught:
        generate(client, "a storm at sea")
    assert caught.value.status_code == status
    assert caught.value.response.headers["x-imgcache"] == "error; reason=upstream"
    direct = fake_openai.requests[-1]
    assert direct.path == IMAGES
    error = error_shape(caught.value.response.json())
    assert ("Rate limit" in error["message"]) == (status == 429)
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "1"
    made, how = generate(client, "a storm at sea")
    assert how == "miss" and fake_openai.calls(IMAGES) == 2  # the error was not stored
    with proxy.proxy.tenants.lease(key_namespace("proxy", KEY_A)) as tenant:
        assert tenant.stats()["upstream_errors"] == 1


def test_upstream_down_is_a_502_with_a_clear_body(start: Callable[..., ProxyServer]) -> None:
    proxy = start(upstream=f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
    with pytest.raises(openai.APIStatusError) as caught:
        generate(sdk(proxy), "a quiet street")
    assert caught.value.status_code == 502
    error = error_shape(caught.value.response.json())
    assert error["code"] == "upstream_unreachable" and "could not be reached" in error["message"]
    forwarded = httpx.get(proxy.base_url + "/models")
    assert forwarded.status_code == 502 and error_shape(forwarded.json())["code"] == "upstream_unreachable"


def test_malformed_and_invalid_requests_get_the_api_400_without_a_crash(proxy: ProxyServer,
                                                                        fake_openai: FakeOpenAI) -> None:
    for body in (b"{not json", b"", b"\xff\xfe"):
        response = httpx.post(proxy.base_url + "/images/generations", content=body,
                              headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert "could not parse the JSON body" in error_shape(response.json())["message"]
    assert fake_openai.calls() == 0
    # Well-formed but not keyable: the API judges it, as it would without the proxy.
    for endpoint, body in (("/images/generations", {"model": "dall-e-3"}),
                           ("/images/generations", [1, 2]),
                           ("/chat/completions", {"model": "gpt-4o", "messages": "not a list"})):
        response = httpx.post(proxy.base_url + endpoint, json=body)
        assert response.status_code == 400 and error_shape(response.json())
        assert response.headers["x-imgcache"] == "bypass; reason=invalid"
    # An SDK option sent as a field is not an API field (the real API refuses it): never keyed,
    # so it cannot make an entry for a request other than the one sent.
    smuggled = {"prompt": "x", "model": "dall-e-2", "extra_body": {"model": "dall-e-3"}}
    assert httpx.post(proxy.base_url + "/images/generations", json=smuggled).headers["x-imgcache"] == \
        "bypass; reason=invalid"
    not_a_form = httpx.post(proxy.base_url + "/images/edits", json={"prompt": "x"})
    assert not_a_form.status_code == 400 and not_a_form.headers["x-imgcache"] == "bypass; reason=invalid"
    no_image = httpx.post(proxy.base_url + "/images/edits", data={"prompt": "x"}, files={"other": b"x"})
    assert no_image.status_code == 400 and "'image'" in error_shape(no_image.json())["message"]


def test_request_size_limit_is_a_413(start: Callable[..., ProxyServer], fake_openai: FakeOpenAI) -> None:
    proxy = start(max_body_bytes=2048)
    big = {"model": "dall-e-3", "prompt": "x" * 4096}
    declared = httpx.post(proxy.base_url + "/images/generations", json=big)
    assert declared.status_code == 413
    assert error_shape(declared.json())["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        yield json.dumps(big).encode()

    for path in ("/images/generations", "/files"):
        streamed = httpx.post(proxy.base_url + path, content=chunks())  # chunked: no length declared
        assert streamed.status_code == 413, path
    assert httpx.post(proxy.base_url + "/files", content=b"x" * 4096).status_code == 413
    assert fake_openai.calls() == 0
    small, how = generate(sdk(proxy), "small enough")
    assert how == "miss"


# -- tenants and namespaces ------------------------------------------------------------------------------


def test_two_api_keys_never_see_each_other_entries(proxy: ProxyServer, fake_openai: FakeOpenAI,
                                                   cache_dir: Path) -> None:
    a, b = sdk(proxy, KEY_A), sdk(proxy, KEY_B)
    made_a, how_a = generate(a, "a secret recipe")
    made_b, how_b = generate(b, "a secret recipe")
    assert (how_a, how_b) == ("miss", "miss") and image_of(made_a) != image_of(made_b)
    assert image_of(generate(a, "a secret recipe")[0]) == image_of(made_a)
    assert image_of(generate(b, "a secret recipe")[0]) == image_of(made_b)
    assert fake_openai.calls(IMAGES) == 2
    keyless = httpx.post(proxy.base_url + "/images/generations",
                         json={"model": "dall-e-3", "prompt": "a secret recipe", "response_format": "b64_json"})
    assert keyless.headers["x-imgcache"] == "miss" and fake_openai.calls(IMAGES) == 3
    namespaces = {p.name for p in cache_dir.iterdir() if p.is_dir()}
    assert {key_namespace("proxy", KEY_A), key_namespace("proxy", KEY_B), "proxy.anon"} <= namespaces


def test_authorization_is_never_stored_or_logged(start: Callable[..., ProxyServer], fake_openai: FakeOpenAI,
                                                 redis_url: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import redis

    caplog.set_level(logging.INFO, logger="imgcache.proxy.access")
    secret = "sk-never-stored-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    with Cache("auth", redis_url=redis_url, directory=tmp_path / "dir", semantic=True) as shared:
        proxy = start(shared)
        client = sdk(proxy, secret)
        generate(client, "a hidden valley")
        generate(client, "a hidden valley", response_format="url")
        client.chat.completions.create(model="gpt-4o", messages=vision_messages(data_url(png(8))))
        client.images.edit(image=("a.png", png(9), "image/png"), prompt="add a bird", model="gpt-image-1")
        client.models.list()
        shared.flush()
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {secret}"  # it did go upstream
    needles = (secret.encode(), hashlib.sha256(secret.encode()).hexdigest().encode(), b"Bearer")
    stored = [p.read_bytes() for p in (tmp_path / "dir").rglob("*") if p.is_file()]
    assert stored
    client_ = redis.Redis.from_url(redis_url)
    for key in client_.scan_iter(match="*"):
        kind = client_.type(key)
        if kind == b"string":
            stored.append(client_.get(key))
        elif kind == b"hash":
            stored.extend(k + v for k, v in client_.hgetall(key).items())
        elif kind == b"stream":
            stored.extend(repr(entry).encode() for entry in client_.xrange(key))
        elif kind == b"list":
            stored.extend(client_.lrange(key, 0, -1))
        stored.append(key)
    assert len(stored) > 10
    for value in stored:
        for needle in needles:
            assert needle not in value
    lines = [record.getMessage() for record in caplog.records if record.name == "imgcache.proxy.access"]
    assert len(lines) >= 5
    for line in lines:
        entry = json.loads(line)
        assert secret not in line and "authorization" not in line.lower()
        assert {"method", "path", "status", "outcome", "endpoint", "ms"} <= set(entry)


def test_namespace_header_allowed_or_refused(start: Callable[..., ProxyServer], fake_openai: FakeOpenAI) -> None:
    refusing = start()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        generate(sdk(refusing, default_headers={"x-imgcache-namespace": "team-a"}), "a bridge")
    assert error_shape(caught.value.response.json())["code"] == "namespace_not_allowed"
    assert fake_openai.calls() == 0

    allowing = start(allow_namespace_header=("team-*",))
    plain = sdk(allowing)
    team = sdk(allowing, default_headers={"x-imgcache-namespace": "team-a"})
    same_key_other_team = sdk(allowing, default_headers={"x-imgcache-namespace": "team-b"})
    other_key_same_team = sdk(allowing, KEY_B, default_headers={"x-imgcache-namespace": "team-a"})
    outcomes = [generate(c, "a bridge")[1] for c in (plain, team, team, same_key_other_team, other_key_same_team)]
    assert outcomes == ["miss", "miss", "hit; tier=memory; match=exact", "miss", "miss"]
    with pytest.raises(openai.PermissionDeniedError):
        generate(sdk(allowing, default_headers={"x-imgcache-namespace": "ops"}), "a bridge")
    with pytest.raises(openai.BadRequestError) as bad:
        generate(sdk(allowing, default_headers={"x-imgcache-namespace": "team a/../x"}), "a bridge")
    assert error_shape(bad.value.response.json())["code"] == "invalid_namespace"

    by_header = start(namespace_mode="header")
    tenant_1 = sdk(by_header, default_headers={"x-imgcache-namespace": "tenant-1"})
    tenant_1_other_key = sdk(by_header, KEY_B, default_headers={"x-imgcache-namespace": "tenant-1"})
    assert generate(tenant_1, "a tower")[1] == "miss"
    assert generate(tenant_1_other_key, "a tower")[1].startswith("hit")  # the gateway's tenant, not the key
    assert generate(sdk(by_header), "a tower")[1] == "bypass; reason=no-namespace"


def test_shared_namespace_is_shared_by_every_key(start: Callable[..., ProxyServer], fake_openai: FakeOpenAI) -> None:
    proxy = start(namespace_mode="shared")
    made, _ = generate(sdk(proxy, KEY_A), "a windmill")
    hit, how = generate(sdk(proxy, KEY_B), "a windmill")
    assert how.startswith("hit") and image_of(hit) == image_of(made) and fake_openai.calls(IMAGES) == 1


def test_no_cache_and_no_store(proxy: ProxyServer, fake_openai: FakeOpenAI) -> None:
    client = sdk(proxy)

    def with_control(value: str) -> Any:
        return client.with_options(default_headers={"x-imgcache-control": value})

    first, _ = generate(client, "a red kite")
    refreshed, how = generate(with_control("no-cache"), "a red kite")
    assert how == "bypass; reason=no-cache" and image_of(refreshed) != image_of(first)
    latest, how = generate(client, "a red kite")
    assert how.startswith("hit") and image_of(latest) == image_of(refreshed)  # the refresh was stored
    peeked, how = generate(with_control("no-store"), "a red kite")
    assert how == "hit; tier=memory; match=exact; no-store" and image_of(peeked) == image_of(refreshed)
    unstored, how = generate(with_control("no-store"), "a blue kite")
    assert how == "miss; no-store"
    assert generate(client, "a blue kite")[1] == "miss"  # nothing was stored for it
    both, how = generate(with_control("no-cache, no-store"), "a blue kite")
    assert how == "bypass; reason=no-cache, no-store"
    assert fake_openai.calls(IMAGES) == 5
    assert "x-imgcache-control" not in fake_openai.requests[-1].headers


def test_namespace_caches_are_bounded_and_share_tiers(start: Callable[..., ProxyServer],
                                                      fake_openai: FakeOpenAI) -> None:
    proxy = start(max_namespaces=2)
    keys = [f"sk-bounded-{i}" for i in range(4)]
    for key in keys:
        generate(sdk(proxy, key), "a compass")
    tenants = proxy.proxy.tenants
    assert tenants.open_count <= 2
    for key in keys:  # evicted namespaces answer from the shared tiers
        assert generate(sdk(proxy, key), "a compass")[1].startswith("hit")
    assert fake_openai.calls(IMAGES) == 4


# -- operations --------------------------------------------------------------------------------------


def test_metrics_and_healthz(proxy: ProxyServer) -> None:
    client = sdk(proxy)
    generate(client, "a metric fox")
    generate(client, "a metric fox")
    client.models.list()
    health = httpx.get(proxy.url + "/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["tiers"] == {"memory": "up", "disk": "up"}
    text = httpx.get(proxy.url + "/metrics").text
    for line in ('imgcache_proxy_requests_total{endpoint="images.generations",outcome="miss"} 1.0',
                 'imgcache_proxy_requests_total{endpoint="images.generations",outcome="hit"} 1.0',
                 'imgcache_proxy_requests_total{endpoint="forward",outcome="bypass"} 1.0',
                 'imgcache_proxy_hits_total{endpoint="images.generations",match="exact",tier="memory"} 1.0',
                 'imgcache_proxy_upstream_seconds_count{endpoint="images.generations"} 1.0',
                 "imgcache_proxy_in_flight 1.0", "imgcache_proxy_namespaces 1.0"):  # this scrape is in flight
        assert line in text, line


def test_serve_command_shuts_down_gracefully(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.latency = 1.0
    port = free_port()
    env = {**os.environ, "IMGCACHE_DIR": str(tmp_path / "cache"), "IMGCACHE_NAMESPACE": "served"}
    process = subprocess.Popen(
        [sys.executable, "-m", "imgcache.cli", "serve", "--port", str(port), "--upstream", fake_openai.base_url,
         "--graceful-timeout", "20", "--no-semantic"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("imgcache serve did not answer /healthz")
        results: list[httpx.Response] = []
        request = threading.Thread(target=lambda: results.append(httpx.post(
            base + "/v1/images/generations", json={"model": "dall-e-3", "prompt": "a slow one"},
            headers={"authorization": f"Bearer {KEY_A}"}, timeout=30)))
        request.start()
        for _ in range(200):
            if fake_openai.calls(IMAGES):
                break
            threading.Event().wait(0.02)
        process.send_signal(signal.SIGTERM)  # while the request is in flight
        request.join(30)
        # uvicorn finishes the requests in flight, shuts the app down, then re-raises the signal
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.stderr.read() if process.stderr else ""
    assert results and results[0].status_code == 200, stderr
    assert results[0].headers["x-imgcache"] == "miss"
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(entry["outcome"] == "miss" and entry["namespace"].startswith("served.k") for entry in access)
    assert KEY_A not in stderr
    assert any(path.is_file() for path in (tmp_path / "cache" / access[-1]["namespace"]).rglob("*"))


# -- pure parts ----------------------------------------------------------------------------------------


def test_form_fields_read_back_what_the_sdk_wrote() -> None:
    fields = form_fields([("prompt", "123"), ("n", "2"), ("output_compression", "80"), ("stream", "false"),
                          ("quality", ""), ("size", "1024x1024"), ("svg[model]", "x"), ("svg[depth]", "3"),
                          ("tags[]", "a"), ("tags[]", "b"), ("scale", "0.5"), ("markup", b"\x89PNG")])
    assert fields == {"prompt": "123", "n": 2, "output_compression": 80, "stream": False, "quality": None,
                      "size": "1024x1024", "svg": {"model": "x", "depth": 3}, "tags": ["a", "b"], "scale": 0.5,
                      "markup": b"\x89PNG"}


def test_config_is_checked() -> None:
    with pytest.raises(imgcache.ConfigError):
        ProxyConfig(upstream="ftp://example")
    with pytest.raises(imgcache.ConfigError):
        ProxyConfig(namespace_mode="per-team")
    with pytest.raises(imgcache.ConfigError):
        ProxyConfig(namespace="bad name")
    with pytest.raises(imgcache.ConfigError):
        ProxyConfig(max_body_bytes=0)
    config = ProxyConfig(upstream="http://127.0.0.1:9/v1/", allow_namespace_header=("a*",))
    assert config.upstream == "http://127.0.0.1:9/v1"
    assert ProxyConfig.from_json(config.to_json()) == config
