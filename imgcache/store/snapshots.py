"""Index snapshots: written by one worker, mapped by every worker (issue 17).

A near-match index (a namespace's scopes) is rebuilt in each process from the namespace's
shared feed. At millions of entries that replay takes minutes and every process pays for its
own copy, so one worker at a time (the holder of a lease) writes a *round*: the index saved
as snapshot directories, all as of one feed position (one per scope for the semantic index,
:mod:`imgcache.match.semantic.mapped`; one of every scope for the perceptual index,
:mod:`imgcache.match.perceptual.mapped`). Other processes map the newest round's directories (the page cache
shares them between the processes of a host) and replay only the feed after that position.

Where snapshots live:

* on each host, in a private directory per namespace and feed
  (``<cache directory>/.snapshots/<namespace>/<feed>`` or
  ``~/.cache/imgcache/snapshots/<namespace>/<feed>``), one subdirectory per snapshot, named by
  its digest and never changed once complete;
* for other hosts, in the store's shared tiers: each file cut into parts of
  :data:`PART_BYTES`, stored as blobs named by their sha256 and the feed (apart from the
  entries' blobs and from the other index's parts), and a manifest (JSON: the files,
  their sizes and parts) stored as a blob too; its sha256 is the snapshot's digest. A fetched
  part that fails its digest (or is gone) makes the snapshot unusable: the process falls back
  to the round before, or to the whole feed, and reports the round as bad so that the next
  writer publishes it again;
* the rounds themselves: a short list of the newest (``<feed>-snapshots``), each naming the
  feed position it covers and each scope's snapshot digest.

The feed is trimmed below the older of the two newest rounds: a process still mapping the
round before the newest can replay its tail, and a removed entry's record, once below the
trim, is gone for good (the snapshots carry it as dead, or leave it out).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import codec
from .._files import make_dirs, write_file
from .._vocabulary import HEX_ID, compact_json
from ..errors import CorruptData, ImgcacheError, TierError, TierUnavailable
from .base import FAILED, blob_key

if TYPE_CHECKING:
    from .tiered import TieredStore

log = logging.getLogger("imgcache")

PART_BYTES = 4 << 20
"""Parts fit the smallest blob a Redis tier keeps when S3 is behind it."""
ROUNDS_KEPT = 4
"""Rounds named in the list (with as many bad reports)."""
ROUNDS_COVERED = 2
"""The newest rounds whose feed tail is kept (the feed is trimmed below the older)."""
PART_TTL = 7 * 86400.0
"""Parts in the shared tiers expire; a round older than half this is published again."""
VERIFIED = ".verified"
MAX_BYTES = 256 << 30
"""A snapshot larger than this is refused (about 400 million entries)."""
MAX_FILES = 16
_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Round:
    """Every scope's snapshot as of one feed position."""

    position: str
    scopes: dict[str, str]
    """scope id -> snapshot digest."""
    at: float
    bad: bool = False

    def to_record(self) -> bytes:
        return compact_json({"p": self.position, "s": self.scopes, "t": round(self.at, 3),
                             **({"bad": True} if self.bad else {})})


@dataclass(frozen=True)
class Shelved:
    """What the list of rounds says."""

    rounds: list[Round]
    """Usable rounds, newest first: of the :data:`ROUNDS_COVERED` newest (the feed holds what
    came after them), those naming no snapshot reported bad."""
    published: list[Round]
    """Every round in the list, newest first."""
    bad: set[str]
    """Snapshots reported bad since the newest round: to be shared again."""
    stale: bool
    """Whether the newest round's parts are near their expiry: to be shared again."""

    @property
    def due(self) -> bool:
        """Whether a round is due whatever the feed holds."""
        return bool(self.bad) or self.stale


def parse_round(raw: bytes) -> Round | None:
    try:
        data = json.loads(raw)
        scopes = data["s"]
        if not (isinstance(data["p"], str) and isinstance(scopes, dict) and isinstance(data["t"], (int, float))
                and all(isinstance(k, str) and isinstance(v, str) and HEX_ID.fullmatch(v) for k, v in scopes.items())):
            return None
        return Round(data["p"], scopes, float(data["t"]), bad=bool(data.get("bad")))
    except (ValueError, KeyError, TypeError):
        return None


def host_root(store: TieredStore) -> Path:
    """Where this host keeps index snapshots: beside the local directory's entries, or in the
    user's cache directory."""
    for tier in store.tiers:
        root = getattr(tier, "root", None)
        if tier.scope == "host" and isinstance(root, Path):
            return root / ".snapshots"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgcache" / "snapshots"


class SnapshotShelf:
    """One namespace's snapshots of one feed's index: on this host, and in the store."""

    def __init__(self, store: TieredStore, namespace: str, feed: str, root: Path) -> None:
        self.store = store
        self.namespace = namespace
        self.feed = feed
        self.root = root / namespace / feed  # each feed forgets the snapshots it does not name
        self._rounds_name = f"{feed}-snapshots"

    # -- parts in the tiers other hosts reach ----------------------------------------------

    def _blob_key(self, digest: str) -> str:
        """Where the blob of sha256 ``digest`` is stored: apart from the entries' blobs and
        from another feed's snapshots (two snapshots may hold the same part, and each feed
        deletes the parts of its own old rounds)."""
        return blob_key(self.namespace, codec.digest(f"snapshot:{self.feed}:{digest}".encode()))

    def _put_blob(self, data: bytes) -> str:
        """Store ``data`` under its sha256 in every fleet tier that takes blobs its size;
        returns the sha256."""
        digest = codec.digest(data)
        key = self._blob_key(digest)
        for tier in self.store.tiers:
            limit = self.store.max_blob_bytes.get(tier.name)
            if tier.scope == "fleet" and (limit is None or len(data) <= limit):
                self.store.guarded(tier, tier.set, key, data, PART_TTL)
        return digest

    def _get_blob(self, digest: str) -> bytes | None:
        """The blob stored under ``digest``, checked against it; None if no fleet tier has it
        whole. TierUnavailable if none has it and one failed: it may be there."""
        key = self._blob_key(digest)
        failed = None
        for tier in self.store.tiers:
            if tier.scope != "fleet":
                continue
            value = self.store.guarded(tier, tier.get, key)
            if value is FAILED:
                failed = tier.name
            elif isinstance(value, bytes):
                if codec.digest(value) == digest:
                    return value
                self.store.corrupt(CorruptData(tier.name, f"snapshot part {digest[:12]} failed its digest"))
        if failed is not None:
            raise TierUnavailable(failed, f"snapshot part {digest[:12]} not read")
        return None

    # -- rounds ---------------------------------------------------------------------------

    def rounds(self) -> Shelved:
        """What the list of rounds says (see :class:`Shelved`)."""
        published: list[Round] = []
        usable: list[Round] = []
        bad: set[str] = set()
        newest_bad = False
        for raw in self.store.read_recent(self.namespace, self._rounds_name):
            found = parse_round(raw)
            if found is None:
                continue
            if found.bad:
                bad.update(found.scopes.values())
                newest_bad = newest_bad or not published
                continue
            if len(published) < ROUNDS_COVERED and not bad.intersection(found.scopes.values()):
                usable.append(found)
            published.append(found)
        stale = bool(published) and time.time() - published[0].at > PART_TTL / 2
        return Shelved(usable, published, bad if newest_bad else set(), stale)

    def report_bad(self, digest: str) -> None:
        """Tell the writers that snapshot ``digest`` could not be fetched whole."""
        self.publish(Round("", {"bad": digest}, round(time.time(), 3), bad=True))

    def publish(self, made: Round) -> None:
        self.store.push_recent(self.namespace, self._rounds_name, made.to_record(), ROUNDS_KEPT * 2)

    @contextmanager
    def lease(self, seconds: float) -> Iterator[bool]:
        """Whether this process may write a round now (one writer per namespace and feed)."""
        ident = codec.digest(f"snapshots:{self.feed}".encode())
        held = self.store.try_mutex(self.namespace, ident, seconds)
        if held is None:
            yield False
            return
        if held is FAILED:  # no shared locks (or they failed): one host, a file lock on it
            with self._host_lock() as got:
                yield got
            return
        try:
            yield True
        finally:
            try:
                held.release()
            except Exception as exc:  # noqa: BLE001 - expired or Redis gone: its timeout frees it
                log.debug("imgcache: releasing the snapshot lease: %r", exc)

    @contextmanager
    def _host_lock(self) -> Iterator[bool]:
        import fcntl

        self._make_root()
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- this host's directories ------------------------------------------------------------

    def _make_root(self) -> None:
        make_dirs(self.root, 0o700)

    def new_directory(self) -> Path:
        """An empty private directory to write a snapshot into (see :meth:`keep`)."""
        self._make_root()
        return Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))

    def keep(self, written: Path) -> str:
        """Name a written snapshot by its digest, share its parts, and return the digest."""
        manifest = {"files": {}}
        for path in sorted(written.iterdir()):
            parts = self._put_parts(path)
            manifest["files"][path.name] = {"size": path.stat().st_size, "parts": parts}
        raw = compact_json(manifest)
        digest = self._put_blob(raw)
        write_file(written / VERIFIED, raw, exclusive=True)
        return self._settle(written, digest)

    def reshare(self, digest: str) -> None:
        """Share this host's copy of snapshot ``digest`` again (its parts expired or broke)."""
        directory = self.root / digest
        raw = (directory / VERIFIED).read_bytes()
        for path in sorted(directory.iterdir()):
            if path.name != VERIFIED:
                self._put_parts(path)
        self._put_blob(raw)

    def _put_parts(self, path: Path) -> list[str]:
        digests = []
        with path.open("rb") as src:
            while chunk := src.read(PART_BYTES):
                digests.append(self._put_blob(chunk))
        return digests

    def _settle(self, written: Path, digest: str) -> str:
        final = self.root / digest
        try:
            os.rename(written, final)
        except OSError:  # the same snapshot is here already (another process, or unchanged)
            shutil.rmtree(written, ignore_errors=True)
        return digest

    def local(self, digest: str) -> Path | None:
        """The snapshot's directory on this host, checked against its digest (fetched from
        the store if it is not here or fails the check); None if it cannot be had now. Only
        a snapshot the store cannot give whole is reported bad: a local or passing failure
        (a full disk, a tier down) is not the snapshot's fault."""
        final = self.root / digest
        try:
            if (final / VERIFIED).is_file():
                if self._intact(final, digest):
                    return final
                log.warning("imgcache: this host's copy of index snapshot %s is damaged; fetching it anew",
                            digest[:12])
                shutil.rmtree(final, ignore_errors=True)
            written = self._fetch(digest)
        except BadSnapshot as exc:
            log.warning("imgcache: index snapshot %s of %s cannot be fetched whole (%s); not used",
                        digest[:12], self.namespace, exc)
            self.report_bad(digest)
            return None
        except (OSError, TierError) as exc:
            log.warning("imgcache: index snapshot %s of %s not fetched now (%s)", digest[:12], self.namespace, exc)
            return None
        self._settle(written, digest)
        return final if (final / VERIFIED).is_file() else None

    def _fetch(self, digest: str) -> Path:
        """Fetch snapshot ``digest`` into a new directory, every part checked."""
        raw = self._get_blob(digest)
        if raw is None:
            raise BadSnapshot("its manifest is missing")
        files = _manifest_files(raw)
        written = self.new_directory()
        try:
            for name, (size, parts) in files.items():
                fd = os.open(written / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for part in parts:
                        data = self._get_blob(part)
                        if data is None:
                            raise BadSnapshot(f"part {part[:12]} is missing or failed its digest")
                        out.write(data)
                    if out.tell() != size:
                        raise BadSnapshot(f"{name}: {out.tell()} bytes, expected {size}")
            write_file(written / VERIFIED, raw, exclusive=True)
        except BaseException:
            shutil.rmtree(written, ignore_errors=True)
            raise
        return written

    def _intact(self, directory: Path, digest: str) -> bool:
        """Whether a directory holds what its manifest says: every part's sha256, hashed on
        all cores (hashlib lets go of the GIL), so that a damaged file is never mapped."""
        raw = (directory / VERIFIED).read_bytes()
        if codec.digest(raw) != digest:
            return False
        try:
            files = _manifest_files(raw)
        except BadSnapshot:
            return False
        present = {p.name for p in directory.iterdir() if p.name != VERIFIED}
        if present != set(files) or any((directory / n).stat().st_size != size for n, (size, _) in files.items()):
            return False

        def check(name: str, index: int, part: str) -> bool:
            with (directory / name).open("rb") as src:
                src.seek(index * PART_BYTES)
                return codec.digest(src.read(PART_BYTES)) == part

        jobs = [(name, index, part) for name, (_, parts) in files.items() for index, part in enumerate(parts)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return all(pool.map(lambda job: check(*job), jobs))

    def drop(self, dropped: set[str], kept: set[str]) -> None:
        """Delete from the fleet tiers the parts of snapshots ``dropped`` that snapshots
        ``kept`` do not share (manifests read from this host's copies, else the store); not
        at all if a kept snapshot's manifest cannot be read (its parts are unknown)."""
        keep_parts = set(kept)
        for digest in kept:
            parts = self._parts(digest)
            if parts is None:
                return
            keep_parts |= parts
        for digest in dropped - kept:
            parts = self._parts(digest)
            for part in (parts or set()) - keep_parts:
                self._delete_blob(part)
            if parts is not None:
                self._delete_blob(digest)

    def _parts(self, digest: str) -> set[str] | None:
        local = self.root / digest / VERIFIED
        try:
            raw = local.read_bytes() if local.is_file() else self._get_blob(digest)
            if raw is None or codec.digest(raw) != digest:
                return None
            return {part for _, parts in _manifest_files(raw).values() for part in parts}
        except (OSError, TierError, BadSnapshot):
            return None

    def _delete_blob(self, digest: str) -> None:
        key = self._blob_key(digest)
        for tier in self.store.tiers:
            if tier.scope == "fleet":
                self.store.guarded(tier, tier.delete, key)

    def forget_others(self, keep: set[str], newest: float) -> None:
        """Remove this host's snapshots that no kept round names, except those made after
        the newest round was published (``newest``, its time): a round being written here,
        not yet published. Mappings stay valid: a removed file lives on while mapped."""
        _remove_older(self.root, lambda name: name not in keep, newest)
        # the layout before one directory per feed (<root>/<namespace>/<digest>): named by no round now
        _remove_older(self.root.parent, HEX_ID.fullmatch, newest)


def _remove_older(directory: Path, unnamed: Callable[[str], object], newest: float) -> None:
    """Remove the subdirectories of ``directory`` that ``unnamed`` picks by name and that
    were made before ``newest``."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if not unnamed(path.name) or not path.is_dir():
            continue
        try:
            if path.stat().st_mtime <= newest:
                shutil.rmtree(path)
        except OSError:
            continue


class BadSnapshot(ImgcacheError):
    """A snapshot the store cannot give whole: a part missing or failing its digest, or a
    manifest that does not describe a snapshot."""


def _manifest_files(raw: bytes) -> dict[str, tuple[int, list[str]]]:
    """A manifest's files as name -> (size, parts), checked: plain names, at most
    :data:`MAX_FILES` of at most :data:`MAX_BYTES` in all, and as many parts as each size takes."""
    try:
        files = json.loads(raw)["files"]
        checked: dict[str, tuple[int, list[str]]] = {}
        for name, spec in files.items():
            size, parts = spec["size"], spec["parts"]
            if (not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or not isinstance(size, int) or size < 0 or not isinstance(parts, list)
                    or len(parts) != -(-size // PART_BYTES)
                    or not all(isinstance(p, str) and HEX_ID.fullmatch(p) for p in parts)):
                raise BadSnapshot(f"the manifest's entry for {str(name)[:40]!r} is not one this version reads")
            checked[name] = (size, parts)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadSnapshot(f"its manifest does not parse: {exc}") from None
    if len(checked) > MAX_FILES or sum(size for size, _ in checked.values()) > MAX_BYTES:
        raise BadSnapshot("its manifest names more than MAX_BYTES")
    return checked
