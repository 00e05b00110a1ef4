"""Local-disk tier: one file per key under a directory that processes on one machine share.

Layout: ``<root>/<namespace>/<kind>/<id[:2]>/<id>``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader sees the old bytes, the new bytes
or no file, never a torn write. Nothing is fsynced: after a power loss a file may be empty
or short, which the front's digest check turns into a miss.

Expiry is not this tier's business on the hot path (the front reads it from the entry
manifest), so ``ttl`` is accepted and ignored. Files are removed by :meth:`DiskTier.prune`
(``imgcache prune``): expired and unreadable entries, blobs no entry needs, and, under a size
cap, the least recently used entries. Reading an entry touches its file's mtime, which is what
"recently used" means here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CorruptData, TierUnavailable
from .base import BLOB, ENTRY, HEX_ID, MISSING, BaseTier, _Missing, check_namespace, split_key

_STATS = "stats.json"
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # what _atomic_write leaves if a writer dies


@dataclass
class PruneReport:
    """What :meth:`DiskTier.prune` removed (or, in a dry run, would remove) and kept."""

    expired: int = 0
    """Entries past their expiry."""
    invalid: int = 0
    """Entry files that are not a valid manifest for their key (damaged, another version)."""
    evicted: int = 0
    """Valid entries removed, least recently used first, to come under ``max_bytes``."""
    orphans: int = 0
    """Blobs no remaining entry needs (older than the grace period)."""
    temporaries: int = 0
    """Half-written files of writers that died (older than the grace period)."""
    freed_bytes: int = 0
    entries: int = 0
    """Entries kept."""
    blobs: int = 0
    """Blobs kept."""
    kept_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _File:
    path: Path
    size: int
    mtime: float
    refs: tuple[tuple[str, str], ...] = ()  # an entry's blobs: (namespace, digest)


class DiskTier(BaseTier):
    """Files under ``root``; also a :class:`~imgcache.store.base.CounterStore`."""

    name = "disk"
    shared = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"<DiskTier {str(self.root)!r}>"

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (whether or not it exists yet)."""
        namespace, kind, ident = split_key(key)
        return self.root / check_namespace(namespace) / kind / ident[:2] / ident

    def get(self, key: str) -> bytes | _Missing:
        path = self.path_for(key)
        with self._errors(f"reading {path}"):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return MISSING
        if split_key(key)[1] == ENTRY:
            with contextlib.suppress(OSError):  # a read-only directory still serves
                os.utime(path)  # used now: prune's size cap evicts by this
        return data

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        path = self.path_for(key)
        with self._errors(f"writing {path}"):
            _atomic_write(path, value)

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with self._errors(f"deleting {path}"):
            path.unlink(missing_ok=True)

    def ping(self) -> None:
        with self._errors(f"checking {self.root}"):
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.root} is not writable")

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None:
        """Merge ``deltas`` into ``<root>/<namespace>/stats.json`` under an exclusive flock."""
        directory = self.root / check_namespace(namespace)
        stats = directory / _STATS
        with self._errors(f"updating {stats}"), self._locked(stats):
            counters = _load_counters(stats)
            for field, delta in deltas.items():
                counters[field] = counters.get(field, 0.0) + float(delta)
            _atomic_write(stats, json.dumps(counters, sort_keys=True).encode())

    def read_counters(self, namespace: str) -> dict[str, float]:
        # Writers replace the file atomically, so reading needs no lock.
        stats = self.root / check_namespace(namespace) / _STATS
        with self._errors(f"reading {stats}"):
            return _load_counters(stats)

    # -- feeds: append-only record logs and short "recent" lists (RecordFeed) ---------------
    # Records are single lines (JSON without raw newlines), appended under an exclusive flock.

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None:
        path = self.root / check_namespace(namespace) / f"{feed}.log"
        with self._errors(f"appending to {path}"), self._locked(path):
            with open(path, "ab") as log:
                log.write(b"".join(record + b"\n" for record in records))

    def read_records(self, namespace: str, feed: str, cursor: str | None, limit: int = 10_000
                     ) -> tuple[list[bytes], str | None]:
        """Whole lines after byte offset ``cursor``; a line still being written is left for later."""
        path = self.root / check_namespace(namespace) / f"{feed}.log"
        offset = int(cursor or 0)
        with self._errors(f"reading {path}"):
            try:
                with open(path, "rb") as log:
                    log.seek(offset)
                    data = log.read()
            except FileNotFoundError:
                return [], cursor
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        return lines, str(offset + end)

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None:
        path = self.root / check_namespace(namespace) / f"{feed}.recent"
        with self._errors(f"updating {path}"), self._locked(path):
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                lines = []
            _atomic_write(path, b"\n".join([record, *lines[: keep - 1]]) + b"\n")

    def read_recent(self, namespace: str, feed: str) -> list[bytes]:
        """Newest first."""
        path = self.root / check_namespace(namespace) / f"{feed}.recent"
        with self._errors(f"reading {path}"):
            try:
                return path.read_bytes().splitlines()
            except FileNotFoundError:
                return []

    def prune(self, *, max_bytes: int | None = None, grace: float = 3600.0, dry_run: bool = False,
              now: float | None = None) -> PruneReport:
        """Remove what the cache no longer needs from every namespace under ``root``.

        Removed: entries past their expiry or that are not a valid manifest; blobs no remaining
        entry references; half-written temporary files. With ``max_bytes``, then the least
        recently used entries (by mtime: reads touch it) until entries and blobs fit, with the
        blobs only they needed. Blobs and temporaries younger than ``grace`` seconds are kept
        (a writer stores an entry's blobs before its manifest) and count towards the size.

        Safe while other processes use the directory: what they read after a removal is a
        miss, never a wrong answer (an entry whose blob went missing is refetched or missed).
        Feeds, counters and everything outside the entry and blob directories are left alone.
        """
        from ..codec import blob_digests
        from .tiered import parse_manifest

        now = time.time() if now is None else now
        report = PruneReport()
        entries: list[_File] = []
        blobs: dict[tuple[str, str], _File] = {}

        def remove(file: _File) -> None:
            report.freed_bytes += file.size
            if not dry_run:
                file.path.unlink(missing_ok=True)

        with self._errors(f"pruning {self.root}"):
            for namespace, kind, path in self._stored_files():
                try:
                    stat = path.stat()
                    is_id = HEX_ID.fullmatch(path.name) is not None
                    raw = path.read_bytes() if kind == ENTRY and is_id else b""
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
                file = _File(path, stat.st_size, stat.st_mtime)
                if not is_id:
                    if _TEMPORARY.fullmatch(path.name) and file.mtime < now - grace:
                        report.temporaries += 1
                        remove(file)
                elif kind == BLOB:
                    blobs[namespace, path.name] = file
                else:
                    try:
                        manifest: dict[str, Any] = parse_manifest(raw, path.name)
                    except CorruptData:
                        report.invalid += 1
                        remove(file)
                        continue
                    if manifest["expires"] is not None and manifest["expires"] <= now:
                        report.expired += 1
                        remove(file)
                        continue
                    needed = [*blob_digests(manifest["result"]),
                              *(image["fp"] for image in manifest.get("images", []))]
                    file.refs = tuple(dict.fromkeys((namespace, d) for d in needed))
                    entries.append(file)

            users: dict[tuple[str, str], int] = {}
            for entry in entries:
                for ref in entry.refs:
                    users[ref] = users.get(ref, 0) + 1

            def drop_unused(refs: list[tuple[str, str]]) -> None:
                for ref in refs:
                    blob = blobs.get(ref)
                    if blob is not None and not users.get(ref) and blob.mtime < now - grace:
                        report.orphans += 1
                        remove(blobs.pop(ref))

            drop_unused(list(blobs))
            size = sum(e.size for e in entries) + sum(b.size for b in blobs.values())
            if max_bytes is not None and size > max_bytes:
                entries.sort(key=lambda e: e.mtime)
                evicted = 0
                for entry in entries:
                    if size <= max_bytes:
                        break
                    before = report.freed_bytes
                    remove(entry)
                    for ref in entry.refs:
                        users[ref] -= 1
                    drop_unused(list(entry.refs))
                    size -= report.freed_bytes - before
                    evicted += 1
                report.evicted = evicted
                del entries[:evicted]
        report.entries, report.blobs = len(entries), len(blobs)
        report.kept_bytes = sum(e.size for e in entries) + sum(b.size for b in blobs.values())
        return report

    def _stored_files(self) -> Iterator[tuple[str, str, Path]]:
        """(namespace, kind, path) of every file in the entry and blob directories under root."""
        if not self.root.is_dir():
            return
        for namespace in sorted(self.root.iterdir()):
            for kind in (ENTRY, BLOB):
                directory = namespace / kind
                shards = sorted(directory.iterdir()) if directory.is_dir() else []
                for shard in shards:
                    if shard.is_dir():
                        for path in sorted(shard.iterdir()):
                            yield namespace.name, kind, path

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate OSError into TierUnavailable: the one place this tier does so."""
        try:
            yield
        except OSError as exc:
            raise TierUnavailable(self.name, f"{doing}: {exc}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # 0o666 minus the umask, like any other file the user creates (mkstemp would force 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_counters(path: Path) -> dict[str, float]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
        return {str(field): float(value) for field, value in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:  # AttributeError: not an object
        raise CorruptData("disk", f"{path} is not a counters file: {exc!r}") from exc
