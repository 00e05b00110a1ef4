"""A burst of identical requests makes exactly one upstream call, with semantic matching on (the
default), with or without Redis, through the library (threads, tasks) and a real ``imgcache serve``.

The leak this guards against: each request looks up (a semantic match included) before it joins
the flight; one that missed just before the previous leader stored its result becomes a leader
after that flight ended, and must find the result instead of calling upstream again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imgcache import Cache, SemanticOptions
from imgcache.testing import FakeOpenAI
from imgcache.testing.servers import free_port, wait_until

from _helpers import responds

BURSTS = 8


def slow_embedder(texts: list[str]) -> np.ndarray:
    """A stand-in for the model that takes a few milliseconds, as a real lookup does."""
    time.sleep(0.004)
    out = np.zeros((len(texts), 16), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row, hashlib.sha256(text.encode()).digest()[0] % 16] = 1.0
    return out


@pytest.fixture
def cache(make_cache: Callable[..., Cache], shared_storage: dict[str, Any]) -> Cache:
    """On a directory or on Redis, with a model-like embedder."""
    return make_cache("burst", semantic=SemanticOptions(embedder=slow_embedder), **shared_storage)


def test_threads_make_one_call_a_burst(cache: Cache) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    @cache.cached()
    def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
        with lock:
            calls.append(prompt)
        return os.urandom(64)  # a different answer each call: two calls show as two images

    for burst in range(BURSTS):
        gate = threading.Barrier(16)

        def caller(index: int, burst: int = burst) -> bytes:
            gate.wait()
            # the same request spelled as callers spell it: one key after normalization
            return generate(prompt=f"A fox in the snow, take {burst}" + " " * (index % 3))

        with ThreadPoolExecutor(16) as pool:
            images = set(pool.map(caller, range(16)))
        assert len(images) == 1, f"burst {burst}: {len(images)} different images"
    assert len(calls) == BURSTS


def test_tasks_make_one_call_a_burst(cache: Cache) -> None:
    calls: list[str] = []

    @cache.cached()
    async def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
        calls.append(prompt)
        await asyncio.sleep(0)
        return os.urandom(64)

    async def bursts() -> None:
        for burst in range(BURSTS):
            images = await asyncio.gather(*(generate(prompt=f"a heron at dawn {burst}") for _ in range(32)))
            assert len(set(images)) == 1

    asyncio.run(bursts())
    assert len(calls) == BURSTS


@pytest.mark.slow  # imgcache serve and the model
def test_a_burst_through_imgcache_serve_with_semantic_on_is_one_upstream_call(tmp_path: Path) -> None:
    """The real model, the real server, a fake upstream answering at once."""
    with FakeOpenAI(image_size=(16, 16)) as fake:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "imgcache.cli", "serve", "--port", str(port), "--upstream", fake.base_url,
             "--log-level", "warning"],
            env={**os.environ, "IMGCACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1/images/generations"
        headers = {"authorization": "Bearer sk-burst"}
        try:
            assert wait_until(lambda: responds(f"http://127.0.0.1:{port}/healthz"), 60)
            with httpx.Client(timeout=120) as warm:  # loads the model: not part of any burst
                warm.post(url, json={"model": "dall-e-2", "prompt": "warm up"}, headers=headers)
            before = fake.calls("/v1/images/generations")
            with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client, \
                    ThreadPoolExecutor(40) as pool:
                for burst in range(5):
                    body = {"model": "dall-e-2", "prompt": f"a lighthouse in a storm, burst {burst}",
                            "response_format": "b64_json"}
                    answers = list(pool.map(lambda _: client.post(url, json=body, headers=headers), range(40)))
                    assert all(answer.status_code == 200 for answer in answers)
                    images = {base64.b64decode(answer.json()["data"][0]["b64_json"]) for answer in answers}
                    assert len(images) == 1, f"burst {burst}: {len(images)} different images"
            assert fake.calls("/v1/images/generations") - before == 5
        finally:
            process.terminate()
            process.wait(30)


def constant_embedder(texts: list[str]) -> np.ndarray:
    """Every prompt at cosine 1 from every other: the verifier alone decides who joins whom."""
    time.sleep(0.004)
    return np.ones((len(texts), 8), dtype=np.float32)


def test_paraphrases_in_flight_together_make_one_call_and_lookalikes_their_own(tmp_path: Path) -> None:
    calls: list[str] = []
    lock = threading.Lock()
    with Cache("paraphrase", directory=tmp_path, semantic=SemanticOptions(embedder=constant_embedder)) as cache:

        @cache.cached()
        def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
            with lock:
                calls.append(prompt)
            time.sleep(0.2)  # long enough for every caller to arrive while it is in flight
            return prompt.encode()

        same = ["a red fox in the snow", "Generate an image of a red fox in the snow",
                "please draw a red fox in the snow", "an image of a red fox in the snow"]
        different = ["a blue fox in the snow", "two red foxes in the snow"]
        gate = threading.Barrier(len(same) + len(different))

        def caller(prompt: str) -> bytes:
            gate.wait()
            return generate(prompt=prompt)

        with ThreadPoolExecutor(len(same) + len(different)) as pool:
            answers = dict(zip(same + different, pool.map(caller, same + different)))
    assert len(calls) == 3, calls  # one for the four ways of asking for a red fox, one each for the others
    assert len({answers[prompt] for prompt in same}) == 1
    assert answers["a blue fox in the snow"] == b"a blue fox in the snow"
    assert answers["two red foxes in the snow"] == b"two red foxes in the snow"


def test_paraphrases_in_flight_together_make_one_call_from_tasks(tmp_path: Path) -> None:
    calls: list[str] = []
    with Cache("paraphrase", directory=tmp_path, semantic=SemanticOptions(embedder=constant_embedder)) as cache:

        @cache.cached()
        async def generate(*, prompt: str, model: str = "dall-e-3") -> bytes:
            calls.append(prompt)
            await asyncio.sleep(0.2)
            return prompt.encode()

        async def main() -> list[bytes]:
            return await asyncio.gather(generate(prompt="a heron at dawn"),
                                        generate(prompt="Create an image of a heron at dawn"),
                                        generate(prompt="a heron at dusk"))

        answers = asyncio.run(main())
    assert len(calls) == 2, calls
    assert answers[0] == answers[1] == b"a heron at dawn" or answers[0] == answers[1] == b"Create an image of a heron at dawn"
    assert answers[2] == b"a heron at dusk"
