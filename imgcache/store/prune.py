"""Prune: remove what a cache directory no longer needs, as a policy over a tier's scan
(:class:`~imgcache.store.base.Scannable`; the local directory offers one).

Removed: entries past their expiry or that are not a valid manifest; blobs no remaining entry
references; half-written temporary files. With ``max_bytes``, then the least recently used
entries until entries and blobs fit. A removed entry's blobs go with it, whatever their age,
unless a remaining entry needs them. Blobs that no entry references *yet* and temporaries are
kept while younger than ``grace`` seconds (a writer stores an entry's blobs before its
manifest); such blobs count towards the size, so they alone can keep it over ``max_bytes``:
the report's ``over_limit_bytes`` then says by how much (``pending_bytes`` of them are kept).

Safe while other processes use the directory: what they read after a removal is a miss, never
a wrong answer (an entry whose blob went missing is refetched or missed). Feeds, counters and
everything outside the entry and blob directories are left alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .._vocabulary import HEX_ID
from ..errors import CorruptData
from ..manifest import expired, needed_blobs, parse
from .base import BLOB, Scannable, StoredFile


@dataclass
class PruneReport:
    """What :func:`prune` removed (or, in a dry run, would remove) and kept."""

    expired: int = 0
    """Entries past their expiry."""
    invalid: int = 0
    """Entry files that are not a valid manifest for their key (damaged, another version), and
    what is not a regular file where an entry or a blob should be (removed)."""
    evicted: int = 0
    """Valid entries removed, least recently used first, to come under ``max_bytes``."""
    orphans: int = 0
    """Blobs no remaining entry needs: those of removed entries (whatever their age), and
    others older than the grace period."""
    temporaries: int = 0
    """Half-written files of writers that died (older than the grace period)."""
    freed_bytes: int = 0
    entries: int = 0
    """Entries kept."""
    blobs: int = 0
    """Blobs kept."""
    kept_bytes: int = 0
    """Bytes of the entries and blobs kept: what ``max_bytes`` limits."""
    pending_blobs: int = 0
    """Blobs kept because no entry references them yet and they are younger than the grace
    period (a writer stores an entry's blobs before its manifest); counted in ``blobs``."""
    pending_bytes: int = 0
    over_limit_bytes: int = 0
    """How far ``kept_bytes`` is still over ``max_bytes`` (0: within it, or no limit). Only
    pending blobs can keep it over: every entry was evicted and they remain."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Entry:
    file: StoredFile
    refs: tuple[tuple[str, str], ...] = field(default=())  # its blobs: (namespace, digest)


def prune(tier: Scannable, *, max_bytes: int | None = None, grace: float = 3600.0, dry_run: bool = False,
          now: float | None = None) -> PruneReport:
    """Prune ``tier`` as the module doc says; with ``dry_run`` only report what would go."""
    now = time.time() if now is None else now
    report = PruneReport()
    entries: list[_Entry] = []
    blobs: dict[tuple[str, str], StoredFile] = {}
    released: set[tuple[str, str]] = set()  # blobs of the expired entries removed

    def remove(file: StoredFile) -> None:
        report.freed_bytes += file.size
        if not dry_run:
            tier.remove_stored(file)

    for file in tier.stored_files():
        if not file.regular:
            report.invalid += 1
            if not dry_run:
                tier.remove_stored(file)
        elif not HEX_ID.fullmatch(file.name):
            if file.temporary and file.mtime < now - grace:
                report.temporaries += 1
                remove(file)
        elif file.kind == BLOB:
            blobs[file.namespace, file.name] = file
        else:
            raw = tier.read_stored(file)
            if raw is None:  # removed by another process meanwhile
                continue
            try:
                manifest = parse(raw, file.name)
            except CorruptData:
                report.invalid += 1
                remove(file)
                continue
            entry = _Entry(file, tuple((file.namespace, d) for d in needed_blobs(manifest)))
            if expired(manifest, now):
                report.expired += 1
                remove(file)
                released.update(entry.refs)
                continue
            entries.append(entry)

    users: dict[tuple[str, str], int] = {}
    for entry in entries:
        for ref in entry.refs:
            users[ref] = users.get(ref, 0) + 1

    def drop_unused(refs: list[tuple[str, str]], *, referenced: bool) -> None:
        """Remove the blobs among ``refs`` that no remaining entry needs: those of a removed
        entry (``referenced``) whatever their age, others past the grace."""
        for ref in refs:
            blob = blobs.get(ref)
            if blob is not None and not users.get(ref) and (referenced or blob.mtime < now - grace):
                report.orphans += 1
                remove(blobs.pop(ref))

    drop_unused(list(released), referenced=True)  # expired entries' blobs
    drop_unused(list(blobs), referenced=False)
    size = sum(e.file.size for e in entries) + sum(b.size for b in blobs.values())
    if max_bytes is not None and size > max_bytes:
        entries.sort(key=lambda e: e.file.mtime)
        evicted = 0
        for entry in entries:
            if size <= max_bytes:
                break
            before = report.freed_bytes
            remove(entry.file)
            for ref in entry.refs:
                users[ref] -= 1
            drop_unused(list(entry.refs), referenced=True)  # they go with their entry
            size -= report.freed_bytes - before
            evicted += 1
        report.evicted = evicted
        del entries[:evicted]
    report.entries, report.blobs = len(entries), len(blobs)
    report.kept_bytes = sum(e.file.size for e in entries) + sum(b.size for b in blobs.values())
    pending = [b for ref, b in blobs.items() if not users.get(ref)]
    report.pending_blobs, report.pending_bytes = len(pending), sum(b.size for b in pending)
    if max_bytes is not None:
        report.over_limit_bytes = max(0, report.kept_bytes - max_bytes)
    return report
