"""Perceptual matching of vision requests: the same question about the same picture.

After an exact miss (the image bytes differ), each input image is fingerprinted
(:mod:`imgcache.match.perceptual.fingerprint`). Requests are grouped into *scopes*: namespace,
operation, normalized text, every output-changing parameter and the number of images; only
requests of one scope can answer each other. Within a scope a
:class:`~imgcache.match.perceptual.hamming.HammingIndex` of the first image's phash proposes
the stored entries within ``radius`` bits, nearest first; each candidate's stored fingerprints
(blobs named in its manifest, checked against their digests) are compared with the query's,
image by image in order, by :func:`~imgcache.match.perceptual.verifier.same_picture`. Only an
entry whose every image is verified the same picture answers. The Hamming distance alone
never decides.

Index records travel through a shared feed (:class:`~imgcache.store.feed.SharedFeed`) as JSON
``{"s": scope, "k": key, "h": phash}``, about 130 bytes; the fingerprints themselves (4-64 KiB)
stay in the tiers as content-addressed blobs of the entry and are read only for candidates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._vocabulary import HEX_ID, compact_json
from ...request import Request, canonical_json
from ..config import PERCEPTUAL_FEED, VisionOptions
from .fingerprint import Fingerprint
from .hamming import HammingIndex
from .verifier import same_picture

if TYPE_CHECKING:
    from ...manifest import Hit
    from ..entries import Entries

log = logging.getLogger("imgcache")
_HASH = re.compile(r"[0-9a-f]{16}")
MATCHER_VERSION = 2
"""Part of every scope id: bump it when fingerprints change, so old records stop matching."""


@dataclass(frozen=True)
class PerceptualMatch:
    """A stored entry verified to answer the request."""

    key: str
    hit: Hit
    distance: int
    """Hamming distance of the first images' phashes."""
    reason: str
    """The verifier's reason for the first image (the others passed as well)."""


class PerceptualMatcher:
    """The perceptual side of one cache object (one namespace)."""

    def __init__(self, entries: Entries, options: VisionOptions) -> None:
        self.namespace = entries.namespace
        self.entries = entries
        self.options = options
        self.feed = entries.feed(PERCEPTUAL_FEED, max_entries=options.max_entries,
                                 sync_interval=options.sync_interval)
        self._indexes: dict[str, HammingIndex] = {}
        self._lock = threading.Lock()

    def scope_id(self, request: Request) -> str:
        body = canonical_json({"v": MATCHER_VERSION, "kind": request.kind, "op": request.operation,
                               "prompt": request.prompt, "params": request.params,
                               "images": len(request.images)})
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def fingerprints(self, request: Request) -> list[Fingerprint]:
        """The request's fingerprints (made once per image); ImageError if one is unreadable."""
        return [image.fingerprint(self.options) for image in request.inputs]

    # -- lookup ---------------------------------------------------------------------------

    def find(self, request: Request) -> PerceptualMatch | None:
        """A stored entry of the request's scope whose images are all the same pictures as the
        request's, or None. Raises ImageError if an image of the request cannot be read."""
        query = self.fingerprints(request)
        self.sync()
        index = self._indexes.get(self.scope_id(request))
        if index is None:
            return None
        for key, distance in index.search(query[0].phash, self.options.radius)[: self.options.candidates]:
            if key == request.key:
                continue
            hit = self.entries.get(key)
            if hit is None:  # expired or purged: stop proposing it
                index.remove(key)
                continue
            stored = self._stored_fingerprints(hit)
            if stored is None or len(stored) != len(query):
                continue
            verdicts = [same_picture(q, s) for q, s in zip(query, stored)]
            if all(same for same, _ in verdicts):
                return PerceptualMatch(key, hit, distance, verdicts[0][1])
        return None

    def _stored_fingerprints(self, hit: Hit) -> list[Fingerprint] | None:
        """The fingerprints an entry was stored with; None if they cannot be read or do not
        belong to the images the manifest names (counted as corrupt)."""
        images = hit.manifest.get("images") or []
        digests = [image["fp"] for image in images]
        blobs = self.entries.get_blobs(hit, digests) if digests else None
        if blobs is None:
            return None
        try:
            stored = [Fingerprint.from_bytes(blobs[d]) for d in digests]
        except ValueError as exc:
            log.warning("imgcache: stored fingerprint of %s does not parse: %r",
                        hit.manifest.get("key", "?")[:12], exc)
            self.entries.corrupt()
            return None
        if any(fp.sha256 != image["sha256"] for fp, image in zip(stored, images)):
            self.entries.corrupt()
            return None
        return stored

    # -- feeding the index ----------------------------------------------------------------

    def stored_form(self, request: Request) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
        """The manifest's ``images`` field and the fingerprint blobs to store with the entry."""
        described, blobs = [], {}
        for fp in self.fingerprints(request):
            data = fp.to_bytes()
            digest = hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            described.append({"sha256": fp.sha256, "fp": digest, "phash": f"{fp.phash:016x}",
                              "width": fp.width, "height": fp.height})
        return described, blobs

    def add(self, request: Request) -> None:
        """Index a stored request, here and (through the feed) in every other process."""
        phash = self.fingerprints(request)[0].phash
        scope_id = self.scope_id(request)
        self._index(scope_id).add(request.key, phash)
        record = {"s": scope_id, "k": request.key, "h": f"{phash:016x}"}
        self.feed.append([compact_json(record)])

    def sync(self, *, force: bool = False) -> int:
        """Index the records other processes added since the last sync; returns how many."""
        return self.feed.sync(self._index_records, force=force)

    def _index(self, scope_id: str) -> HammingIndex:
        with self._lock:
            index = self._indexes.get(scope_id)
            if index is None:
                index = self._indexes[scope_id] = HammingIndex()
            return index

    def _index_records(self, records: list[bytes]) -> int:
        by_scope: dict[str, list[tuple[str, int]]] = {}
        corrupt = 0
        for record in records:
            try:
                data = json.loads(record)
                scope_id, key, phash = data["s"], data["k"], data["h"]
                if not (isinstance(scope_id, str) and len(scope_id) == 32 and isinstance(key, str)
                        and HEX_ID.fullmatch(key) and isinstance(phash, str) and _HASH.fullmatch(phash)):
                    raise ValueError("bad field")
            except (ValueError, KeyError, TypeError):
                corrupt += 1
                continue
            by_scope.setdefault(scope_id, []).append((key, int(phash, 16)))
        for scope_id, items in by_scope.items():
            self._index(scope_id).add_many(items)
        if corrupt:
            self.entries.corrupt(corrupt)
        return sum(len(items) for items in by_scope.values())
