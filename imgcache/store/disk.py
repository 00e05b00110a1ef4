"""Local-disk tier: one file per key under a directory that processes on one machine share.

Layout: ``<root>/<namespace>/<kind>/<id[:2]>/<id>``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader sees the old bytes, the new bytes
or no file, never a torn write. Nothing is fsynced: after a power loss a file may be empty
or short, which the front's digest check turns into a miss.

Expiry is not this tier's business on the hot path (the front reads it from the entry
manifest), so ``ttl`` is accepted and ignored. Files are removed by :func:`imgcache.store.prune.prune`
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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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
from .._vocabulary import NAMESPACE, check_namespace
from ..errors import CorruptData, TierUnavailable
from ..stats import counter_value
from .base import BLOB, ENTRY, MISSING, BaseTier, StoredFile, _Missing, log_corrupt, split_key

if TYPE_CHECKING:
    from .claims import FileClaims
    from .ledger import FileLedger

T = TypeVar("T")
_STATS = "stats.json"
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # what write_file leaves if a writer dies


class DiskTier(BaseTier):
    """Files under ``root``; also shared counters, feeds, secrets, URLs, claims, budget ledgers and a
    scan for prune."""

    name = "disk"
    scope = "host"

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

    def trim_records(self, namespace: str, feed: str, below: str) -> None:
        """Not done: a feed file's positions are byte offsets, which a trim would move."""

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

    def append_log(self, namespace: str, log: str, record: bytes, *, max_records: int,
                   max_bytes: int) -> None:
        """Append a line; past ``max_bytes`` the file is cut to its newest half (from a whole line)."""
        path = self._file(namespace, f"{log}.log")

        def append() -> None:
            with self.locked(path):
                if append_file(path, record + b"\n", self.file_mode) > max_bytes:
                    data = read_file(path) or b""
                    keep = data[len(data) // 2:]
                    write_file(path, keep[keep.find(b"\n") + 1:], self.file_mode)

        self.repairing(path, "appending to", append)

    def read_log(self, namespace: str, log: str) -> list[bytes]:
        path = self._file(namespace, f"{log}.log")
        return (self.repairing(path, "reading", lambda: read_file(path)) or b"").splitlines()

    def counter_namespaces(self, limit: int) -> set[str]:
        """The folders under root that hold a counters file."""
        found: set[str] = set()
        with self._errors(f"listing {self.root}"):
            try:
                with os.scandir(self.root) as entries:
                    for entry in entries:
                        if not NAMESPACE.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                            continue
                        if os.path.isfile(os.path.join(entry.path, _STATS)):
                            found.add(entry.name)
                            if len(found) > limit:
                                break
            except FileNotFoundError:  # nothing stored yet
                pass
        return found

    def blob_url(self, key: str, data: bytes, lifetime: int) -> str | None:
        """The blob's file, written first if absent, as a ``file://`` URL."""
        path = self.path_for(key)
        if not path.exists():
            self.set(key, data)
        return path.resolve().as_uri()

    def keep_secret(self, name: str, fresh: bytes) -> bytes:
        """``<root>/.<name>``, written whole or not at all, so a concurrent reader never sees
        it half written; the first process's secret is everyone's."""
        path = self.root / f".{name}"
        with self._errors(f"keeping {path}"):
            try:  # private to this user whatever file_mode says
                write_file(path, fresh, DEFAULT_FILE_MODE, exclusive=True)
                return fresh
            except FileExistsError:
                stored = read_file(path) or b""
        if len(stored) < 16:
            raise CorruptData(self.name, f"{path} does not hold a secret")
        return stored

    def claims(self, namespace: str, scope: str, *, lease: float, refusal_ttl: float) -> FileClaims:
        """``flock`` claims, which need no lease, and refusal files (see :mod:`imgcache.store.claims`)."""
        from .claims import FileClaims

        return FileClaims(self.root, namespace, scope, refusal_ttl=refusal_ttl, file_mode=self.file_mode)

    def ledger(self, owner: str) -> FileLedger:
        """Budget windows as JSON files under ``flock`` (see :mod:`imgcache.store.ledger`)."""
        from .ledger import FileLedger

        return FileLedger(self.root, owner, file_mode=self.file_mode)

    # -- Scannable: what prune walks (see :mod:`imgcache.store.prune`) ---------------------

    def stored_files(self) -> Iterator[StoredFile]:
        """Every file in the entry and blob directories under root, namespace by namespace."""
        with self._errors(f"scanning {self.root}"):
            if not self.root.is_dir():
                return
            for namespace in sorted(self.root.iterdir()):
                for kind in (ENTRY, BLOB):
                    directory = namespace / kind
                    for shard in sorted(directory.iterdir()) if directory.is_dir() else []:
                        for path in sorted(shard.iterdir()) if shard.is_dir() else []:
                            try:
                                info = path.lstat()
                            except FileNotFoundError:  # removed by another process meanwhile
                                continue
                            yield StoredFile(namespace.name, kind, path.name, info.st_size, info.st_mtime,
                                             path, regular=stat.S_ISREG(info.st_mode),
                                             temporary=_TEMPORARY.fullmatch(path.name) is not None)

    def read_stored(self, file: StoredFile) -> bytes | None:
        with self._errors(f"reading {file.handle}"):
            try:
                return read_file(file.handle)
            except FileNotFoundError:
                return None

    def remove_stored(self, file: StoredFile) -> None:
        with self._errors(f"removing {file.handle}"):
            if file.regular:
                file.handle.unlink(missing_ok=True)
            else:
                self._clear(file.handle)

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
