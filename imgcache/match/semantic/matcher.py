"""Semantic matching of generation prompts: embed, search, verify.

After an exact miss, the prompt's content (filler removed) is embedded; the vector index of
its *scope* (namespace, operation, output-changing parameters, embedder) proposes the most
similar stored prompts; :func:`~imgcache.match.semantic.verifier.verify` accepts a candidate
only if the two prompts ask for the same picture. Cosine similarity alone never decides.

Index records travel through a shared *feed* so that every process sees every other
process's entries: a Redis stream where Redis is configured, otherwise an append-only file in
the local directory. A record is JSON (scope, key, normalized prompt, float16 vector in
base64): nothing read back is unpickled, and a restarted process rebuilds its index from the
feed without re-embedding. A record whose entry has expired or was purged is dropped from
the index when a lookup finds the entry gone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..._vocabulary import HEX_ID, compact_json
from ...request import Request, canonical_json
from ..config import FEED, RECENT, SemanticOptions
from ..rounds import Rounds
from .embed import BatchingEmbedder, Embedder, make_embedder
from .index import Candidate, SemanticIndex
from .verifier import Verdict, content_text, verify

if TYPE_CHECKING:
    from ..entries import Entries

log = logging.getLogger("imgcache")


@dataclass(frozen=True)
class Proposal:
    """A candidate and the verifier's decision on it."""

    candidate: Candidate
    verdict: Verdict


@dataclass(frozen=True)
class InFlight:
    """A request calling upstream, as similar requests in flight compare with it."""

    prompt: str
    vector: np.ndarray


class SemanticMatcher:
    """The semantic side of one cache object (one namespace)."""

    def __init__(self, entries: Entries, options: SemanticOptions) -> None:
        self.namespace = entries.namespace
        self.entries = entries
        self.options = options
        embedder = make_embedder(options.embedder)
        self.embedder: Embedder = BatchingEmbedder(embedder) if options.batch_embeddings else embedder
        self.index = SemanticIndex()
        self.feed = entries.feed(FEED, max_entries=options.max_entries, sync_interval=options.sync_interval)
        self.rounds = Rounds(entries.snapshots(FEED, options.snapshot_dir), self.index, self.feed,
                             self._index_records, min_rows=options.snapshot_rows)
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # key -> vector, for add()
        self._vectors_lock = threading.Lock()
        self._dim: int | None = None  # the embedder's vector length, once it has embedded

    # -- scope and text -------------------------------------------------------------------

    def scope_id(self, request: Request) -> str:
        body = canonical_json({"kind": request.kind, "op": request.operation,
                               "params": request.params, "embedder": self.embedder.name})
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def _text(self, request: Request) -> str:
        if len(request.prompt) > self.options.max_prompt_chars:
            return ""
        return content_text(request.prompt)

    def _embed(self, request: Request, text: str) -> np.ndarray:
        with self._vectors_lock:
            vector = self._vectors.get(request.key)
        return vector if vector is not None else self._remember(request, self.embedder.embed([text])[0])

    async def embed_ahead(self, request: Request) -> None:
        """Embed a request's prompt from a coroutine, batched with the others in flight, so
        that its lookup (in a worker thread) finds the vector made: a burst of concurrent
        misses is a batch or two, not one model call per request in as many threads."""
        text = self._text(request)
        if not text or not isinstance(self.embedder, BatchingEmbedder):
            return
        with self._vectors_lock:
            if request.key in self._vectors:
                return
        self._remember(request, (await self.embedder.embed_async([text]))[0])

    def _remember(self, request: Request, vector: np.ndarray) -> np.ndarray:
        if vector.ndim != 1 or not np.all(np.isfinite(vector)) or not np.any(vector):
            raise ValueError(f"the embedder {self.embedder.name} returned an unusable vector")
        self._dim = len(vector)
        with self._vectors_lock:
            self._vectors[request.key] = vector
            while len(self._vectors) > 1024:
                self._vectors.popitem(last=False)
        return vector

    # -- lookup ---------------------------------------------------------------------------

    def propose(self, request: Request) -> list[Proposal]:
        """The stored prompts most similar to the request's, each with the verifier's verdict."""
        text = self._text(request)
        if not text:
            return []
        vector = self._embed(request, text)
        self.sync()
        scope = self.index.get(self.scope_id(request))
        if scope is None or scope.dim != len(vector):
            return []
        return [Proposal(c, verify(c.prompt, request.prompt))
                for c in scope.search(vector, self.options.candidates, self.options.min_similarity)
                if c.key != request.key]

    def in_flight(self, request: Request) -> tuple[str, InFlight] | None:
        """What a request about to call upstream is compared by with the others in flight:
        its scope and its prompt's vector (embedded by its lookup already)."""
        text = self._text(request)
        if not text:
            return None
        return self.scope_id(request), InFlight(request.prompt, self._embed(request, text))

    def same_in_flight(self, new: InFlight, leader: InFlight) -> bool:
        """Whether ``leader``'s result, once stored, answers ``new``: as a stored prompt would."""
        norms = float(np.linalg.norm(new.vector) * np.linalg.norm(leader.vector))
        similarity = float(new.vector @ leader.vector) / norms if norms else 0.0
        return similarity >= self.options.min_similarity and verify(leader.prompt, new.prompt).same

    def forget(self, request: Request, key: str) -> None:
        """Drop an entry that vanished (expired or purged) from the index, here and (through
        a removal record on the feed) in every other process and the next snapshot."""
        scope_id = self.scope_id(request)
        scope = self.index.get(scope_id)
        if scope is not None and scope.remove(key):
            self.feed.append([compact_json({"s": scope_id, "k": key, "x": 1})])

    # -- feeding the index ----------------------------------------------------------------

    def add(self, request: Request, until: float = 0.0) -> None:
        """Index a stored request, here and (through the feed) in every other process;
        ``until``: when its entry expires at the latest (0: never)."""
        text = self._text(request)
        if not text:
            return
        vector = self._embed(request, text)
        scope_id = self.scope_id(request)
        scope = self.index.scope(scope_id, len(vector), authoritative=True)
        assert scope is not None
        scope.add(request.key, request.prompt, vector, until)
        self._dim = len(vector)
        record = compact_json({
            "s": scope_id, "k": request.key, "p": request.prompt,
            "v": base64.b64encode(vector.astype("<f2").tobytes()).decode(),
            **({"u": math.ceil(until)} if until else {}),
        })
        self.feed.append([record])

    def sync(self, *, force: bool = False) -> int:
        """Index the records other processes added since the last sync; returns how many.
        The first one stands on the newest snapshot round, if any (see :mod:`..rounds`)."""
        return self.rounds.sync(force=force)

    def _index_records(self, records: list[bytes]) -> int:
        """Apply feed records to the index in order: entries added, scope by scope, and
        removals. Malformed records are skipped and counted as corrupt. Returns how many
        entries were added."""
        pending: dict[str, list[tuple[str, str, np.ndarray, float]]] = {}
        added = corrupt = 0

        def flush() -> None:
            nonlocal added, corrupt
            for scope_id, items in pending.items():
                dim = len(items[0][2])
                fitting = [item for item in items if len(item[2]) == dim]
                scope = self.index.scope(scope_id, dim)
                if scope is None:  # the scope's vectors have another length
                    corrupt += len(items)
                    continue
                corrupt += len(items) - len(fitting)
                scope.add_many([item[:3] for item in fitting], [item[3] for item in fitting])
                added += len(fitting)
            pending.clear()

        for record in records:
            try:
                data = json.loads(record)
                scope_id, key = data["s"], data["k"]
                if not (isinstance(scope_id, str) and isinstance(key, str) and HEX_ID.fullmatch(key)):
                    raise ValueError("bad field")
                if data.get("x") == 1:  # a removal: what came before it goes in first
                    flush()
                    scope = self.index.get(scope_id)
                    if scope is not None:
                        scope.remove(key, read_at=self.feed.reading_to)
                    continue
                prompt, raw, until = data["p"], base64.b64decode(data["v"], validate=True), data.get("u", 0)
                if not (isinstance(prompt, str) and raw and len(raw) % 2 == 0
                        and type(until) in (int, float) and 0 <= until < 2**32):
                    raise ValueError("bad field")
                vector = np.frombuffer(raw, dtype="<f2").astype(np.float32)
                if not np.all(np.isfinite(vector)) or self._dim not in (None, len(vector)):
                    raise ValueError("bad vector")
            except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
                corrupt += 1
                continue
            pending.setdefault(scope_id, []).append((key, prompt, vector, float(until)))
        flush()
        if corrupt:
            self.entries.corrupt(corrupt)
        return added

    # -- recent hits, for stats and inspect ------------------------------------------------

    def record_hit(self, request: Request, proposal: Proposal) -> None:
        item = {
            "at": round(time.time(), 3), "query": request.prompt[:500],
            "matched": proposal.candidate.prompt[:500],
            "similarity": round(proposal.candidate.similarity, 4),
            "verdict": proposal.verdict.reason, "key": request.key, "matched_key": proposal.candidate.key,
        }
        self.entries.push_recent(RECENT, compact_json(item), self.options.recent)
