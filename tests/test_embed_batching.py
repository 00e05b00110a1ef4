"""Embeddings of concurrent lookups are made together, in one worker thread."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import imgcache
from imgcache.match.semantic.embed import BatchingEmbedder, CallableEmbedder


class Recorder:
    """An embedder that takes ``delay`` seconds a call and records the size of each batch."""

    def __init__(self, delay: float = 0.02, fail: str | None = None) -> None:
        self.delay, self.fail = delay, fail
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail is not None and self.fail in texts:
            raise RuntimeError("the model fell over")
        return np.array([[len(t), 1.0, sum(map(ord, t)) % 97] for t in texts], float)


def test_concurrent_callers_share_batches_and_get_their_own_vectors() -> None:
    record = Recorder()
    batching = BatchingEmbedder(CallableEmbedder(record, name="r"))
    alone = CallableEmbedder(Recorder(delay=0), name="r")
    got: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        got[i] = batching.embed([f"prompt {i}", f"other {i}"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(got) == list(range(24))
    for i, vectors in got.items():
        assert np.allclose(vectors, alone.embed([f"prompt {i}", f"other {i}"]))
    assert sum(record.batches) == 48 and len(record.batches) < 24  # batched, nothing lost
    assert max(record.batches) <= batching.max_batch
    assert record.threads == {"imgcache-embed"}  # the model is only ever called from the worker
    assert batching.name == "r"


def test_a_failing_batch_fails_each_of_its_callers_and_the_next_call_works() -> None:
    record = Recorder(fail="boom")
    batching = BatchingEmbedder(CallableEmbedder(record, name="r"))
    with pytest.raises(RuntimeError, match="fell over"):
        batching.embed(["boom"])
    assert batching.embed(["fine"]).shape == (1, 3)


def test_batches_hold_at_most_max_batch_texts() -> None:
    record = Recorder()
    batching = BatchingEmbedder(CallableEmbedder(record, name="r"), max_batch=4)

    async def burst() -> list[np.ndarray]:
        return await asyncio.gather(*(batching.embed_async([f"t{i}"]) for i in range(10)))

    vectors = asyncio.run(burst())
    assert [v.shape for v in vectors] == [(1, 3)] * 10
    assert sum(record.batches) == 10 and max(record.batches) <= 4


@pytest.mark.parametrize("batched", [True, False])
def test_a_burst_of_concurrent_misses_through_the_cache(tmp_path: Path, batched: bool) -> None:
    """32 coroutines ask for 32 different pictures at once: each is answered with its own
    result, and with batching on the prompts are embedded in a few model calls."""
    record = Recorder(delay=0.01)
    options = imgcache.SemanticOptions(embedder=CallableEmbedder(record, name="r"), batch_embeddings=batched)
    with imgcache.Cache(namespace="burst", directory=tmp_path, semantic=options) as cache:
        @cache.cached()
        async def generate(*, prompt: str) -> str:
            return f"image of {prompt}"

        async def burst() -> list[str]:
            await generate(prompt="a warm-up picture")  # creates the matcher
            record.batches.clear()
            return await asyncio.gather(*(generate(prompt=f"a fox number {i} in snow") for i in range(32)))

        answers = asyncio.run(burst())
        assert answers == [f"image of a fox number {i} in snow" for i in range(32)]
        assert cache.stats()["misses"] == 33
    assert sum(record.batches) >= 32  # every prompt embedded (once for its lookup, reused after)
    if batched:
        assert len(record.batches) < 16
    else:
        assert len(record.batches) >= 32 and max(record.batches) == 1


def test_a_caller_whose_event_loop_is_gone_leaves_the_worker_serving_the_others() -> None:
    """An async caller gives up and its loop closes; a thread's job in the same batch is still
    answered (settling the first must not kill the worker before the second)."""
    batching = BatchingEmbedder(CallableEmbedder(Recorder(delay=0.2), name="r"))
    busy = threading.Thread(target=batching.embed, args=(["keeps the worker busy"],))
    busy.start()
    time.sleep(0.05)

    async def impatient() -> None:
        await asyncio.wait_for(batching.embed_async(["gives up"]), timeout=0.05)

    got: list[np.ndarray] = []
    patient = threading.Thread(target=lambda: got.append(batching.embed(["waits"])))
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(impatient())  # queued behind the busy batch; its loop is closed when it is settled
    patient.start()  # joins the impatient job's batch, or the next one
    patient.join(timeout=10)
    busy.join(timeout=10)
    assert got and got[0].shape == (1, 3)
    assert batching.embed(["after"]).shape == (1, 3)


def test_the_worker_ends_when_idle_and_starts_again() -> None:
    batching = BatchingEmbedder(CallableEmbedder(Recorder(delay=0), name="r"))
    batching.IDLE_SECONDS = 0.05
    batching.embed(["a"])
    deadline = time.monotonic() + 5
    while batching._working and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not batching._working  # no thread left behind by a closed cache's matcher
    assert batching.embed(["b"]).shape == (1, 3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_embeds_with_a_worker_of_its_own() -> None:
    batching = BatchingEmbedder(CallableEmbedder(Recorder(delay=0), name="r"))
    batching.embed(["parent"])  # the parent's worker exists
    pid = os.fork()
    if pid == 0:  # the child: its own worker, or it would wait forever
        try:
            os._exit(0 if batching.embed(["child"]).shape == (1, 3) else 1)
        except BaseException:  # noqa: BLE001 - the child reports any failure by its exit status
            os._exit(2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child never got its embedding")
