"""Configuration of near-duplicate matching (semantic for prompts, perceptual for images) and
the shared list of recent semantic hits: light enough to import from ``imgcache stats`` and
``Cache()`` (no numpy, no model, no Pillow)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._vocabulary import json_records
from ..fetch import TRUSTED, FetchPolicy

FEED = "semantic"
"""Name of the feed that carries index records."""
RECENT = "semantic-recent"
PERCEPTUAL_FEED = "perceptual"
"""Name of the feed that carries perceptual index records."""


@dataclass(frozen=True)
class SemanticOptions:
    """Configuration of semantic matching (``Cache(semantic=SemanticOptions(...))``)."""

    embedder: Any = None
    """None (all-MiniLM-L6-v2), a sentence-transformers model name or path, an
    :class:`~imgcache.match.semantic.embed.Embedder`, or a callable ``list[str] -> (n, dim)``."""
    min_similarity: float = 0.7
    """Cosine similarity below which a stored prompt is not even proposed to the verifier."""
    candidates: int = 8
    """How many of the most similar stored prompts the verifier looks at."""
    max_prompt_chars: int = 2000
    """Longer prompts are matched exactly only."""
    max_entries: int = 1_000_000
    """Records kept in a namespace's shared feed (older ones are trimmed)."""
    sync_interval: float = 0.5
    """How stale a process's view of other processes' entries may be, in seconds."""
    snapshot_rows: int = 50_000
    """Entries held outside any index snapshot (or 2% of those inside, if more) before the
    worker standing on the newest round and holding the lease writes the next round, which
    new processes map instead of replaying the whole feed (see
    :mod:`imgcache.store.snapshots`); 0: this process never writes one on its own (rounds
    others wrote are still used)."""
    snapshot_dir: str | None = None
    """Where this host keeps snapshots (default: ``.snapshots`` in the cache directory, or
    ``~/.cache/imgcache/snapshots``)."""
    recent: int = 100
    """Semantic hits kept for ``imgcache stats`` and ``imgcache inspect``."""
    batch_embeddings: bool = True
    """Embed the prompts of concurrent lookups together, in one worker thread (False: each
    lookup calls the embedder itself, in its own thread)."""


@dataclass(frozen=True)
class VisionOptions:
    """How vision requests read their images and match them (``Cache(vision=VisionOptions(...))``)."""

    perceptual: bool = True
    """Answer a re-encoded, resized or converted copy of a stored image (verified); False:
    exact bytes only."""
    radius: int = 10
    """Hamming radius of the phash search that proposes candidates to the verifier (the
    verifier's own gate is no wider, so a larger radius only costs time)."""
    candidates: int = 8
    """How many of the nearest stored images the verifier looks at."""
    max_image_bytes: int = 64 << 20
    """Larger images are not read: the call passes through uncached."""
    max_pixels: int = 50_000_000
    """Larger images (by their header) are not decoded: the call passes through uncached.
    With ``perceptual=False`` images are never decoded, only digested: the answer to bytes
    that are not an image is then cached like any other (the API's own error never is)."""
    max_decode_bytes: int = 256 << 20
    """Larger images by what decoding them takes (pixels times bytes a pixel, read from the
    header) are not decoded: the call passes through uncached. Decodes in a process also share
    one budget (``IMGCACHE_DECODE_BUDGET``, 512 MiB; see
    :mod:`imgcache.match.perceptual.decoding`)."""
    fetch_remote: bool = True
    """Fetch remote image URLs to key them by content (and send the fetched bytes upstream);
    False keys them by URL."""
    fetch_timeout: float = 10.0
    """Seconds a fetch may take in all: connection, redirects, headers and body."""
    fetch_policy: FetchPolicy = TRUSTED
    """Which addresses a fetch may reach (default: any, the caller chose the URL; the proxy
    reaches public addresses only, see :class:`~imgcache.fetch.FetchPolicy`)."""
    read_paths: bool = True
    """Read a string that is not a URL as a local file's path (the library's caller is trusted);
    False refuses it with :class:`~imgcache.errors.SourceRefused` (the proxy's callers are not)."""
    max_entries: int = 1_000_000
    """Records kept in a namespace's shared perceptual feed (older ones are trimmed)."""
    sync_interval: float = 0.5
    snapshot_rows: int = 50_000
    """As :attr:`SemanticOptions.snapshot_rows`, for the perceptual index's snapshot rounds."""
    snapshot_dir: str | None = None
    """As :attr:`SemanticOptions.snapshot_dir`."""


def read_recent_hits(store: Any, namespace: str) -> list[dict[str, Any]]:
    """Newest first; entries that do not parse are skipped."""
    return json_records(store.read_recent(namespace, RECENT))
