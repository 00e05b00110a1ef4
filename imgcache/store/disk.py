"""Local-disk tier: one file per key under a directory that processes on one machine share.

Layout: ``<root>/<namespace>/<kind>/<id[:2]>/<id>``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader sees the old bytes, the new bytes
or no file, never a torn write. Nothing is fsynced: after a power loss a file may be empty
or short, which the front's digest check turns into a miss.

Expiry is not this tier's business on the hot path (the front reads it from the entry
manifest), so ``ttl`` is accepted and ignored. Files are removed by :meth:`DiskTier.prune`
(``imgcache prune``): expired and unreadable entries, blobs no entry needs, and, under a size
cap, the least recently used entries with their blobs. Reading an entry touches its file's mtime, which is what
"recently used" means here.

Files are private to their user: created with ``file_mode`` (default 0o600), directories with
the matching mode (0o700); see :mod:`imgcache._files`. Something that is not one of the tier's
files where one should be (a directory, a FIFO, a symlink, a file where a directory should be)
is removed, reported and the call made again: it costs that key, never the tier. A counters
file or field that is not a number is reset.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._files import (
    DEFAULT_FILE_MODE,
    NotAFile,
    append_file,
    check_file_mode,
    dir_mode,
    flocked,
    make_dirs,
    read_file,
    tighten,
    write_file,
)
from ..errors import CorruptData, TierUnavailable
from ..stats import counter_value
from .base import (
    BLOB,
    ENTRY,
    HEX_ID,
    MISSING,
    BaseTier,
    _Missing,
    check_namespace,
    log_corrupt,
    split_key,
)

T = TypeVar("T")
_STATS = "stats.json"
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # what write_file leaves if a writer dies


@dataclass
class PruneReport:
    """What :meth:`DiskTier.prune` removed (or, in a dry run, would remove) and kept."""

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
class _File:
    path: Path
    size: int
    mtime: float
    refs: tuple[tuple[str, str], ...] = ()  # an entry's blobs: (namespace, digest)


class DiskTier(BaseTier):
    """Files under ``root``; also a :class:`~imgcache.store.base.CounterStore`."""

    name = "disk"
    shared = True

    def __init__(self, root: str | os.PathLike[str], *, file_mode: int = DEFAULT_FILE_MODE) -> None:
        self.root = Path(root)
        self.file_mode = check_file_mode(file_mode)
        self.dir_mode = dir_mode(file_mode)
        tighten(self.root, self.dir_mode)  # made by a version that left it readable to all

    def __repr__(self) -> str:
        return f"<DiskTier {str(self.root)!r}>"

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (whether or not it exists yet)."""
        namespace, kind, ident = split_key(key)
        return self.root / check_namespace(namespace) / kind / ident[:2] / ident

    def get(self, key: str) -> bytes | _Missing:
        path = self.path_for(key)
        data = self.repairing(path, "reading", lambda: read_file(path))
        if data is None:
            return MISSING
        if split_key(key)[1] == ENTRY:
            with contextlib.suppress(OSError):  # a read-only directory still serves
                os.utime(path)  # used now: prune's size cap evicts by this
        return data

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        path = self.path_for(key)
        self.repairing(path, "writing", lambda: write_file(path, value, self.file_mode))

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        self.repairing(path, "deleting", lambda: path.unlink(missing_ok=True))

    def ping(self) -> None:
        with self._errors(f"checking {self.root}"):
            make_dirs(self.root, self.dir_mode)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.root} is not writable")

    def add_counters(self, namespace: str, deltas: Mapping[str, float]) -> None:
        """Merge ``deltas`` into ``<root>/<namespace>/stats.json`` under an exclusive flock;
        a file or a field that is not a number is reset."""
        stats = self._file(namespace, _STATS)

        def update() -> list[str]:
            with self.locked(stats):
                counters, garbage = _load_counters(stats)
                for field, delta in deltas.items():
                    counters[field] = counters.get(field, 0.0) + float(delta)
                write_file(stats, json.dumps(counters, sort_keys=True).encode(), self.file_mode)
            return garbage

        for what in self.repairing(stats, "updating", update):
            self.report_corrupt(CorruptData(self.name, f"{stats}: {what}; reset"))

    def read_counters(self, namespace: str) -> dict[str, float]:
        """The counters; what is not a number is skipped (the next add resets it). Writers
        replace the file atomically, so reading needs no lock."""
        stats = self._file(namespace, _STATS)
        counters, garbage = self.repairing(stats, "reading", lambda: _load_counters(stats))
        for what in garbage:
            log_corrupt(CorruptData(self.name, f"{stats}: {what}; skipped"))
        return counters

    # -- feeds: append-only record logs and short "recent" lists (RecordFeed) ---------------
    # Records are single lines (JSON without raw newlines), appended under an exclusive flock.

    def append_records(self, namespace: str, feed: str, records: list[bytes], max_len: int) -> None:
        path = self._file(namespace, f"{feed}.log")
        data = b"".join(record + b"\n" for record in records)

        def append() -> None:
            with self.locked(path):
                append_file(path, data, self.file_mode)

        self.repairing(path, "appending to", append)

    def read_records(self, namespace: str, feed: str, cursor: str | None, limit: int = 10_000
                     ) -> tuple[list[bytes], str | None]:
        """Whole lines after byte offset ``cursor``; a line still being written is left for later."""
        path = self._file(namespace, f"{feed}.log")
        offset = int(cursor or 0)
        data = self.repairing(path, "reading", lambda: read_file(path, offset))
        if data is None:
            return [], cursor
        if not data and offset and self.repairing(path, "reading", path.stat).st_size < offset:
            return self.read_records(namespace, feed, None, limit)  # replaced: read it anew
        end = data.rfind(b"\n") + 1
        lines = data[:end].split(b"\n")[:-1]
        return lines, str(offset + end)

    def push_recent(self, namespace: str, feed: str, record: bytes, keep: int) -> None:
        path = self._file(namespace, f"{feed}.recent")

        def push() -> None:
            with self.locked(path):
                lines = (read_file(path) or b"").splitlines()
                write_file(path, b"\n".join([record, *lines[: keep - 1]]) + b"\n", self.file_mode)

        self.repairing(path, "updating", push)

    def read_recent(self, namespace: str, feed: str) -> list[bytes]:
        """Newest first."""
        path = self._file(namespace, f"{feed}.recent")
        return (self.repairing(path, "reading", lambda: read_file(path)) or b"").splitlines()

    def prune(self, *, max_bytes: int | None = None, grace: float = 3600.0, dry_run: bool = False,
              now: float | None = None) -> PruneReport:
        """Remove what the cache no longer needs from every namespace under ``root``.

        Removed: entries past their expiry or that are not a valid manifest; blobs no remaining
        entry references; half-written temporary files. With ``max_bytes``, then the least
        recently used entries (by mtime: reads touch it) until entries and blobs fit. A removed
        entry's blobs go with it, whatever their age, unless a remaining entry needs them.
        Blobs that no entry references *yet* and temporaries are kept while younger than
        ``grace`` seconds (a writer stores an entry's blobs before its manifest); such blobs
        count towards the size, so they alone can keep it over ``max_bytes``: the report's
        ``over_limit_bytes`` then says by how much (``pending_bytes`` of them are kept).

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
        released: set[tuple[str, str]] = set()  # blobs of the expired entries removed

        def remove(file: _File) -> None:
            report.freed_bytes += file.size
            if not dry_run:
                file.path.unlink(missing_ok=True)

        with self._errors(f"pruning {self.root}"):
            for namespace, kind, path in self._stored_files():
                try:
                    info = path.lstat()
                    is_id = HEX_ID.fullmatch(path.name) is not None
                    if not stat.S_ISREG(info.st_mode):
                        report.invalid += 1
                        if not dry_run:
                            self._clear(path)
                        continue
                    raw = (read_file(path) or b"") if kind == ENTRY and is_id else b""
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
                file = _File(path, info.st_size, info.st_mtime)
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
                    needed = [*blob_digests(manifest["result"]),
                              *(image["fp"] for image in manifest.get("images", []))]
                    file.refs = tuple(dict.fromkeys((namespace, d) for d in needed))
                    if manifest["expires"] is not None and manifest["expires"] <= now:
                        report.expired += 1
                        remove(file)
                        released.update(file.refs)
                        continue
                    entries.append(file)

            users: dict[tuple[str, str], int] = {}
            for entry in entries:
                for ref in entry.refs:
                    users[ref] = users.get(ref, 0) + 1

            def drop_unused(refs: list[tuple[str, str]], *, referenced: bool) -> None:
                """Remove the blobs among ``refs`` that no remaining entry needs: those of a
                removed entry (``referenced``) whatever their age, others past the grace."""
                for ref in refs:
                    blob = blobs.get(ref)
                    if blob is not None and not users.get(ref) and (referenced or blob.mtime < now - grace):
                        report.orphans += 1
                        remove(blobs.pop(ref))

            drop_unused(list(released), referenced=True)  # expired entries' blobs
            drop_unused(list(blobs), referenced=False)
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
                    drop_unused(list(entry.refs), referenced=True)  # they go with their entry
                    size -= report.freed_bytes - before
                    evicted += 1
                report.evicted = evicted
                del entries[:evicted]
        report.entries, report.blobs = len(entries), len(blobs)
        report.kept_bytes = sum(e.size for e in entries) + sum(b.size for b in blobs.values())
        pending = [b for ref, b in blobs.items() if not users.get(ref)]
        report.pending_blobs, report.pending_bytes = len(pending), sum(b.size for b in pending)
        if max_bytes is not None:
            report.over_limit_bytes = max(0, report.kept_bytes - max_bytes)
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

    def _file(self, namespace: str, name: str) -> Path:
        """A namespace's file beside its entries: counters, feeds."""
        return self.root / check_namespace(namespace) / name

    # -- for this tier's files, and the files others keep under root (the prewarm log) -------

    def locked(self, path: Path) -> contextlib.AbstractContextManager[None]:
        """An exclusive flock on the lock file beside ``path`` (``<name>.lock``)."""
        return flocked(_lock_path(path), self.file_mode)

    def repairing(self, path: Path, doing: str, op: Callable[[], T]) -> T:
        """Run ``op`` on the file at ``path`` under root. If something that is not such a file
        stands in its way (see :func:`_misplaced`), remove it, report it and run ``op`` once
        more: bad data costs that one file, never the tier. OSError becomes TierError."""
        with self._errors(f"{doing} {path}"):
            try:
                return op()
            except OSError as exc:
                if not self._in_the_way(exc):
                    raise
                self._clear(path)
                what = f"{path} was in the way ({exc.strerror}); removed"
                self.report_corrupt(CorruptData(self.name, what))
            return op()

    def _in_the_way(self, exc: OSError) -> bool:
        """Whether ``exc`` says that something stands where one file (or its directory) of
        this tier should be; when the root itself is not a directory, the tier is unusable."""
        return _misplaced(exc) and self.root.is_dir()

    def _clear(self, path: Path) -> None:
        """Remove what stands where the file ``path`` (or its lock file) or its directories
        should be: a directory or anything but a regular file at the file's path, a file at a
        directory's. Best effort, and only ever under root."""
        try:
            for target in (path, _lock_path(path)):
                info = os.lstat(target) if os.path.lexists(target) else None
                if info is not None and stat.S_ISDIR(info.st_mode):
                    shutil.rmtree(target)
                elif info is not None and not stat.S_ISREG(info.st_mode):
                    target.unlink()
            for parent in path.relative_to(self.root).parents:
                directory = self.root / parent
                if directory == self.root or directory.is_dir() or directory.is_symlink():
                    continue
                if os.path.lexists(directory):
                    directory.unlink()
        except (OSError, ValueError) as exc:  # ValueError: not under root, left alone
            log_corrupt(CorruptData(self.name, f"{path} cannot be cleared: {exc!r}"))

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate OSError into TierError, the one place this tier does so: CorruptData for
        something in the way of one file that could not be removed, else TierUnavailable."""
        try:
            yield
        except OSError as exc:
            if self._in_the_way(exc):
                raise CorruptData(self.name, f"{doing}: {exc}") from exc
            raise TierUnavailable(self.name, f"{doing}: {exc}") from exc


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _misplaced(exc: OSError) -> bool:
    """Whether ``exc`` says that something else stands where a file or its directory should
    be: a directory (EISDIR), a file on the way (ENOTDIR, EEXIST from mkdir), a symlink
    (ELOOP: files are opened without following one), a FIFO or a device."""
    return isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError, NotAFile)) or (
        exc.errno in (errno.ELOOP, errno.ENXIO))


def _load_counters(path: Path) -> tuple[dict[str, float], list[str]]:
    """The counters in ``path``, and what was found in it that is not one (left out)."""
    raw = read_file(path)
    if raw is None:
        return {}, []
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {}, ["not a counters file"]
    counters: dict[str, float] = {}
    garbage: list[str] = []
    for field, value in data.items():
        number = counter_value(value)
        if number is None:
            garbage.append(f"field {field!r} is not a number")
        else:
            counters[field] = number
    return counters, garbage
