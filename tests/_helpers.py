"""Plain helpers shared by the test modules (the fixtures are in conftest.py). Test modules
import them as ``from _helpers import ...`` (pytest puts ``tests/`` on the path); a script run
in a subprocess puts ``tests/`` on its ``sys.path`` first.

* :class:`Upstream`: a stand-in for a paid API that counts and records its calls and answers a
  function of them (by default :func:`expected`); :func:`generator`: a cached function over it.
* :class:`BagOfWords` / :func:`bow_options`: a tiny deterministic embedder (no model) for the
  semantic matching plumbing.
* :func:`encode`, :func:`data_url`, :func:`png_chunk`: image bytes for requests.
* :func:`responds`: whether a starting server answers yet.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from imgcache import Cache
    from imgcache.match.config import SemanticOptions


# --- a stand-in for a paid API -----------------------------------------------------------------


def expected(prompt: str, **params: object) -> bytes:
    """What :class:`Upstream` answers by default: a function of the request alone, so that a
    test can tell a right result from a wrong one whichever way it was produced."""
    return f"image for {prompt} {sorted(params.items())}".encode()


class Upstream:
    """A stand-in for a paid API: counts its calls and records their positional arguments
    (under a lock: threads may share it), and answers ``answer(*args, **params)``.

    ``numbered=True`` passes the call's number (1 for the first) before the arguments, for
    stand-ins whose every answer is new; ``sleep`` seconds (outside the lock) are a slow API.
    """

    def __init__(self, answer: Callable[..., Any] = expected, *, numbered: bool = False,
                 sleep: float = 0.0) -> None:
        self.answer = answer
        self.numbered = numbered
        self.sleep = sleep
        self.asked: list[tuple[Any, ...]] = []  # the positional arguments of every call, in order
        self.lock = threading.Lock()

    @classmethod
    def returning(cls, result: Any) -> Upstream:
        """A stand-in that answers ``result`` (the same object) to every call."""
        return cls(lambda *args, **params: result)

    @property
    def calls(self) -> int:
        return len(self.asked)

    @property
    def prompts(self) -> list[Any]:
        """The first argument (the prompt) of every call, in order."""
        return [args[0] if args else None for args in self.asked]

    def __call__(self, *args: Any, **params: Any) -> Any:
        with self.lock:
            self.asked.append(args)
            number = len(self.asked)
        if self.sleep:
            time.sleep(self.sleep)
        if self.numbered:
            return self.answer(number, *args, **params)
        return self.answer(*args, **params)


def generator(cache: Cache, upstream: Upstream, name: str = "gen") -> Callable[..., bytes]:
    """``generate(*, prompt)`` cached by ``cache`` under ``name``, answered by ``upstream``."""

    @cache.cached(name=name)
    def generate(*, prompt: str) -> bytes:
        return upstream(prompt)

    return generate


# --- a bag-of-words embedder -------------------------------------------------------------------


def bow_vectors(texts: list[str], dim: int = 64) -> np.ndarray:
    """Hashed word counts: deterministic across processes, no model."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    return out


class BagOfWords:
    """A counting bag-of-words embedding function."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.texts.extend(texts)
        return bow_vectors(texts)


def bow_options(fn: Callable[[list[str]], Any] | None = None, name: str = "bow", **options: Any
                ) -> SemanticOptions:
    """Semantic matching with ``fn`` (a new :class:`BagOfWords` by default) as the embedder."""
    from imgcache.match.config import SemanticOptions
    from imgcache.match.semantic.embed import CallableEmbedder

    return SemanticOptions(embedder=CallableEmbedder(fn or BagOfWords(), name=name), **options)


# --- image bytes -------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """``img`` saved as ``fmt`` (Pillow's save options as keywords)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# --- servers -----------------------------------------------------------------------------------


def responds(url: str) -> bool:
    """Whether ``url`` answers 200 (a server that is not up yet: False)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
