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
``{"s": scope, "k": key, "h": phash, "u": expires at the latest}``, about 140 bytes, and
removals as ``{"s": scope, "k": key, "x": 1}``; the fingerprints themselves (4-64 KiB) stay in
the tiers as content-addressed blobs of the entry and are read only for candidates. A new
process stands on the newest snapshot round of the index (see :mod:`imgcache.match.rounds`)
and reads only the feed after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._vocabulary import HEX_ID, compact_json
from ...request import Request, canonical_json
from ..config import PERCEPTUAL_FEED, VisionOptions
from ..rounds import Rounds
from .fingerprint import Fingerprint
from .index import PerceptualIndex
from .verifier import same_picture

if TYPE_CHECKING:
    from ...manifest import Hit
    from ..entries import Entries

log = logging.getLogger("imgcache")
_HASH = re.compile(r"[0-9a-f]{16}")
_SCOPE = re.compile(r"[0-9a-f]{32}")
MAX_RECORD_BYTES = 512
"""A record is about 140 bytes; a longer one is not ours to parse."""
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
        self.index = PerceptualIndex()
        self.rounds = Rounds(entries.snapshots(PERCEPTUAL_FEED, options.snapshot_dir), self.index, self.feed,
                             self._index_records, min_rows=options.snapshot_rows)

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
        scope_id = self.scope_id(request)
        for key, distance in self.index.search(scope_id, query[0].phash, self.options.radius)[: self.options.candidates]:
            if key == request.key:
                continue
            hit = self.entries.get(key)
            if hit is None:  # expired or purged: stop proposing it, here and everywhere
                if self.index.remove(scope_id, key):
                    self.feed.append([compact_json({"s": scope_id, "k": key, "x": 1})])
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

    def add(self, request: Request, until: float = 0.0) -> None:
        """Index a stored request, here and (through the feed) in every other process;
        ``until``: when its entry expires at the latest (0: never)."""
        phash = self.fingerprints(request)[0].phash
        scope_id = self.scope_id(request)
        self.index.add_many(scope_id, [(request.key, phash, until)])
        record = {"s": scope_id, "k": request.key, "h": f"{phash:016x}", **({"u": math.ceil(until)} if until else {})}
        self.feed.append([compact_json(record)])

    def sync(self, *, force: bool = False) -> int:
        """Index the records other processes added since the last sync; returns how many.
        The first one stands on the newest snapshot round, if any."""
        return self.rounds.sync(force=force)

    def _index_records(self, records: list[bytes]) -> int:
        """Apply feed records in order: entries added, scope by scope, and removals. Malformed
        records are skipped and counted as corrupt. Returns how many entries were added."""
        pending: dict[str, list[tuple[str, int, float]]] = {}
        added = corrupt = 0

        def flush() -> None:
            nonlocal added
            for scope_id, items in pending.items():
                self.index.add_many(scope_id, items)
                added += len(items)
            pending.clear()

        for record in records:
            try:
                if len(record) > MAX_RECORD_BYTES:
                    raise ValueError("too long")
                data = json.loads(record)
                scope_id, key = data["s"], data["k"]
                if not (isinstance(scope_id, str) and _SCOPE.fullmatch(scope_id) and isinstance(key, str)
                        and HEX_ID.fullmatch(key)):
                    raise ValueError("bad field")
                if data.get("x") == 1:  # a removal: what came before it goes in first
                    flush()
                    self.index.remove(scope_id, key, read_at=self.feed.reading_to)
                    continue
                phash, until = data["h"], data.get("u", 0)
                if not (isinstance(phash, str) and _HASH.fullmatch(phash) and type(until) in (int, float)
                        and 0 <= until < 2**32):
                    raise ValueError("bad field")
            except (ValueError, KeyError, TypeError, RecursionError):
                corrupt += 1
                continue
            pending.setdefault(scope_id, []).append((key, int(phash, 16), float(until)))
        flush()
        if corrupt:
            self.entries.corrupt(corrupt)
        return added
