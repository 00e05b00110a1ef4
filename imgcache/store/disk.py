"""Local-disk tier: one file per key under a directory that processes on one machine share.

Layout: ``<root>/<namespace>/<kind>/<id[:2]>/<id>``. Writes go to a temporary file in the
target directory and are renamed into place, so a reader sees the old bytes, the new bytes
or no file, never a torn write. Nothing is fsynced: after a power loss a file may be empty
or short, which the front's digest check turns into a miss.

Expiry is not this tier's business (the front reads it from the entry manifest), so ``ttl``
is accepted and ignored; pruning old files is the job of a separate sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..errors import CorruptData, TierUnavailable
from .base import MISSING, BaseTier, _Missing, check_namespace, split_key

_STATS = "stats.json"


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
                return path.read_bytes()
            except FileNotFoundError:
                return MISSING

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
