"""Rounds of index snapshots: map the newest on start, write one when it is due (see
:mod:`imgcache.store.snapshots` for where they live and why). Each near-match index kind
(semantic, perceptual) has its own rounds; what a kind's snapshot holds is its own
(:class:`SnapshotIndex`).

* On its first sync a process maps every scope of the newest usable round and reads the
  feed on from the round's position (falling back to the round before, then to the whole
  feed, when a snapshot cannot be had whole).
* Every :data:`CHECK_INTERVAL`, off the caller's path, it looks at the rounds. The holder of
  the lease writes a new round once ``snapshot_rows`` entries (or :data:`GROWTH` of those
  in snapshots, if more) are held outside any snapshot, or the newest round was reported
  bad or is old: every changed scope's snapshot rows plus its own (unchanged scopes are
  reused as they are; the perceptual index is one scope); then it stands on the new round
  and trims the feed below the round before. The other processes
  stand on a newer round once they have read the feed as far as it covers.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..store.feed import position_after
from ..store.snapshots import Round, Shelved

if TYPE_CHECKING:
    from ..store.feed import SharedFeed
    from ..store.snapshots import SnapshotShelf

log = logging.getLogger("imgcache")

CHECK_INTERVAL = 30.0
LEASE_SECONDS = 1800.0
GROWTH = 0.02
"""A round is due once a namespace's rows outside its snapshots reach this share of those in
them (and ``snapshot_rows``): a round rewrites every changed scope whole, so its cost grows with
the scope, and the rounds must grow rarer with it."""
_STOPPING = threading.Event()
_WORKERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    """A round being written must not be inside native code when the interpreter goes away:
    it stops between scopes (a round of one huge scope may still be cut short, unpublished)."""
    _STOPPING.set()
    for worker in list(_WORKERS):
        worker.join(timeout=5)


MAX_REMEMBERED_REMOVALS = 100_000
"""Removals an index re-applies to a newer snapshot it stands on (one that may predate them)."""


class Removals:
    """The entries an index removed since it stood on its snapshot, oldest first: each
    ``(scope, key)`` with where on the feed its removal was read (None: removed by this
    process, its record not read back yet). A newer snapshot gets them again, unless written
    as of a feed position at or past where they were read: its writer had read them, and
    any later store of the key. Past :data:`MAX_REMEMBERED_REMOVALS` the oldest are
    forgotten, and :meth:`lost_after` says which snapshots that makes unsafe to stand on."""

    _NONE_LOST = "0-0"

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], str | None] = {}
        self._lost: str | None = self._NONE_LOST  # the latest read_at forgotten (None: a local one)

    def add(self, scope_id: str, key: str, read_at: str | None) -> None:
        self._entries.pop((scope_id, key), None)
        self._entries[(scope_id, key)] = read_at
        if len(self._entries) > MAX_REMEMBERED_REMOVALS:
            oldest = next(iter(self._entries))
            dropped = self._entries.pop(oldest)
            if self._lost is not None and (dropped is None or position_after(dropped, self._lost)):
                self._lost = dropped  # None (made here, position unknown) is the latest of all

    def __contains__(self, entry: tuple[str, str]) -> bool:
        return entry in self._entries

    def by_scope(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for scope_id, key in self._entries:
            grouped.setdefault(scope_id, []).append(key)
        return grouped

    def lost_after(self, position: str) -> bool:
        """Whether a removal read after ``position`` (or made here) was forgotten: a snapshot
        written as of ``position`` may hold its entry, and this index cannot say which."""
        return self._lost is None or position_after(self._lost, position)

    def after(self, position: str) -> Removals:
        """Those a snapshot written as of ``position`` may lack (see :meth:`lost_after`)."""
        kept = Removals()
        kept._entries = {entry: read_at for entry, read_at in self._entries.items()
                         if read_at is None or position_after(read_at, position)}
        return kept


class Snapshot(Protocol):
    """A scope's snapshot, opened."""

    directory: Path
    rows: int


class SnapshotScope(Protocol):
    """What a round is written from: one scope of an index."""

    snapshot: Snapshot | None
    @property
    def changed(self) -> bool:
        """Whether it holds rows or removals its snapshot lacks."""
    @property
    def own_rows(self) -> int:
        """Live entries held outside its snapshot."""


class SnapshotIndex(Protocol):
    """An index kind that rounds snapshot: its scopes, how one is written and opened."""

    def scopes(self) -> list[tuple[str, Any]]: ...
    def stand_on(self, scope_id: str, snapshot: Any, position: str) -> None:
        """Serve the scope from ``snapshot``, written as of feed ``position``: removals read
        at or before it are in the snapshot, and need not be remembered any more."""
    def removals_lost_after(self, position: str) -> bool:
        """Whether a removal the index forgot may be missing from a snapshot as of ``position``."""
    def clear(self) -> None: ...
    def open_snapshot(self, directory: Path) -> Snapshot:
        """Raises OSError, ValueError or RuntimeError for files it does not read."""
    def write_snapshot(self, scope: Any, directory: Path) -> None: ...


class Rounds:
    """One matcher's snapshots, and its way of reading its feed: :meth:`sync`."""

    def __init__(self, shelf: SnapshotShelf, index: SnapshotIndex, feed: SharedFeed,
                 apply: Callable[[list[bytes]], int], *, min_rows: int, check_interval: float = CHECK_INTERVAL) -> None:
        self.shelf = shelf
        self.index = index
        self.feed = feed
        self.apply = apply
        """Applies feed records to the index; returns how many entries it added."""
        self.min_rows = min_rows
        self.check_interval = check_interval
        self.standing: Round | None = None
        self._read_by_check: str | None = None  # how far the feed was read at the last check
        self._checked = time.monotonic()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False
        self._start_lock = threading.Lock()

    def sync(self, *, force: bool = False) -> int:
        """Apply the records other processes put on the feed since the last sync (the first
        sync stands on the newest round first); returns how many entries were added. Then,
        if this process may write rounds, look at them now and then (:meth:`tick`)."""
        if not self._started:
            with self._start_lock:  # lookups meanwhile wait: none reads the feed from its start
                if not self._started:
                    self.start()
                    self._started = True
        added = self.feed.sync(self.apply, force=force)
        if self.min_rows:
            self.tick()
        return added

    def read_feed(self) -> int:
        """Apply every record the feed holds now."""
        return self.feed.sync(self.apply, force=True)

    # -- start: map the newest round ----------------------------------------------------------

    def start(self) -> None:
        """Before the first read of the feed: stand on the newest round that can be had (a
        failure costs only the replay of the whole feed)."""
        try:
            self._start()
        except Exception:  # a snapshot is an optimization: never the caller's problem
            log.warning("imgcache: index snapshots of %s not used; replaying the feed", self.shelf.namespace,
                        exc_info=True)

    def _start(self) -> None:
        shelved = self.shelf.rounds()
        for candidate in shelved.rounds:
            mapped = self._map(candidate)
            if mapped is None:
                continue
            if not self.feed.start_at(candidate.position):
                return  # read already (another thread): the index is being fed from the start
            self._stand(candidate, mapped)
            self._read_by_check = candidate.position  # where this process starts reading
            self._forget_unnamed(shelved)
            return

    def _map(self, made: Round) -> dict[str, Snapshot] | None:
        """Every scope of a round, mapped; None if one cannot be had now."""
        mapped: dict[str, Snapshot] = {}
        for scope_id, digest in made.scopes.items():
            directory = self.shelf.local(digest)
            if directory is None:
                return None
            try:
                mapped[scope_id] = self.index.open_snapshot(directory)
            except (OSError, ValueError, RuntimeError) as exc:  # intact (its digest held): not ours to read
                log.warning("imgcache: index snapshot %s not mapped (%s)", digest[:12], exc)
                return None
        return mapped

    def _stand(self, made: Round, mapped: dict[str, Snapshot]) -> None:
        for scope_id, snapshot in mapped.items():
            self.index.stand_on(scope_id, snapshot, made.position)
        self.standing = made
        log.info("imgcache: %s stands on an index snapshot round of %d entries as of %s",
                 self.shelf.namespace, sum(s.rows for s in mapped.values()), made.position)

    # -- later: write or adopt, off the caller's path ---------------------------------------------

    def tick(self) -> None:
        """Called after each sync: at most every ``check_interval``, look at the rounds in a
        background thread."""
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return
            self._checked = now
            self._worker = threading.Thread(target=self.check, name="imgcache-snapshots", daemon=True)
            _WORKERS.add(self._worker)
            self._worker.start()

    def settle(self, timeout: float | None = None) -> None:
        """Wait for a check running in the background (for tests and benchmarks)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def check(self) -> None:
        """Start over on the newest round if the feed was trimmed past what this process read;
        stand on the newest round if it is newer than this process's; then write a round if
        one is due, this process stands on the newest and holds the lease."""
        try:
            read = self.feed.position()
            shelved = self.shelf.rounds()
            if self._behind(shelved):
                self._start_over(shelved, read)
                return
            if read is not None:
                self._read_by_check = read[1]
            newest = next(iter(shelved.rounds), None)
            if newest is not None and self._newer(newest) and not self.adopt(newest, shelved):
                return  # a newer round to stand on first
            if not self._due(shelved):
                return
            with self.shelf.lease(LEASE_SECONDS) as held:
                if held:
                    self.write(self.shelf.rounds())  # as it is now that the lease is held
        except Exception:  # a snapshot is an optimization: never the caller's problem
            log.warning("imgcache: index snapshot round failed; the feed still serves", exc_info=True)

    def _due(self, shelved: Shelved) -> bool:
        """Whether this process should write a round: it stands on the newest (or none was
        ever written, so the feed is whole), and enough rows are outside the snapshots, or
        the newest was reported bad or is old."""
        published = shelved.published
        if published and self.standing != published[0]:
            return False  # a newer round it cannot stand on, or the feed's start was trimmed
        scopes = self.index.scopes()
        own = sum(scope.own_rows for _, scope in scopes)
        mapped = sum(scope.snapshot.rows for _, scope in scopes if scope.snapshot is not None)
        return bool(scopes) and (own >= max(self.min_rows, int(mapped * GROWTH)) or shelved.due)

    def _newer(self, made: Round) -> bool:
        """Whether ``made`` comes after the round this process stands on (never step back:
        the feed this process read is past the older round's)."""
        return self.standing is None or position_after(made.position, self.standing.position)

    def _behind(self, shelved: Shelved) -> bool:
        """Whether the feed may have been trimmed below records this process had not read: it
        was trimmed below the second-newest round, and at the last check (or its start) this
        process had read less far (its reads since may have skipped what the trim took)."""
        if len(shelved.published) < 2:
            return False
        trimmed_below = shelved.published[1].position
        return self._read_by_check is None or position_after(trimmed_below, self._read_by_check)

    def _start_over(self, shelved: Shelved, read: tuple[object, str | None] | None) -> None:
        """Forget the index and stand on the newest round that can be had. With none, keep
        the index (it lacks what the trim took: it never writes a round) until one can be."""
        for candidate in shelved.rounds:
            mapped = self._map(candidate)
            if mapped is not None:
                break
        else:
            log.warning("imgcache: %s read the index feed too slowly (it was trimmed past its position) "
                        "and no round can be had now; its index lacks some entries", self.shelf.namespace)
            self.standing = None
            self._read_by_check = None if read is None else read[1]
            return
        log.warning("imgcache: %s read the index feed too slowly (it was trimmed past its position); "
                    "starting over on the round as of %s", self.shelf.namespace, candidate.position)
        self._restart_on(candidate, mapped)

    def _restart_on(self, made: Round, mapped: dict[str, Snapshot]) -> None:
        """Forget the index, stand on ``made`` and read the feed on from its position."""
        def start_over() -> None:
            self.index.clear()
            self._stand(made, mapped)
            self._read_by_check = made.position

        self.feed.restart_at(made.position, start_over)

    def adopt(self, made: Round, shelved: Shelved) -> bool:
        """Stand on ``made`` (of ``shelved``) once this process has read the feed as far as it
        covers; whether it does."""
        self.read_feed()
        read = self.feed.position()
        if read is None or read[1] is None or position_after(made.position, read[1]):
            return False  # its feed tail is not read yet: records it covers would be skipped
        mapped = self._map(made)
        if mapped is None:
            return False
        if self.index.removals_lost_after(made.position):  # it cannot mask what it forgot: read the tail again
            self._restart_on(made, mapped)
        else:
            self._stand(made, mapped)
        self._forget_unnamed(shelved)
        return True

    def _forget_unnamed(self, shelved: Shelved) -> None:
        """Remove this host's snapshots that the usable rounds do not name."""
        self._forget_others(shelved.rounds, max(made.at for made in shelved.published))

    def _forget_others(self, kept: list[Round], newest: float) -> None:
        """Remove this host's snapshots that the ``kept`` rounds and the one this process
        stands on do not name, unless made after the newest round (published at ``newest``)."""
        kept = [*kept, *([self.standing] if self.standing else [])]
        self.shelf.forget_others({digest for made in kept for digest in made.scopes.values()}, newest)

    def write(self, shelved: Shelved) -> Round | None:
        """Write a round of every scope as of the feed position read so far, publish it, stand
        on it, trim the feed below the round before and drop the parts of the one before that."""
        self.read_feed()  # all that the feed holds so far is in the index: the round covers it
        read = self.feed.position()
        if read is None or read[1] is None:
            return None
        tier, position = read
        published = shelved.published
        if published and (self.standing != published[0] or not (position_after(position, published[0].position)
                                                               or shelved.due)):
            return None  # another round came first, or nothing new since the newest
        if tier is not self.shelf.store.feed_tier():
            return None  # the feed moved tiers (Redis down): positions are not comparable
        scopes: dict[str, str] = {}
        mapped: dict[str, Snapshot] = {}
        try:
            for scope_id, scope in self.index.scopes():
                if _STOPPING.is_set():
                    return None
                if scope.snapshot is not None and not scope.changed:
                    scopes[scope_id] = scope.snapshot.directory.name  # named by its digest
                    if shelved.stale or scopes[scope_id] in shelved.bad:
                        self.shelf.reshare(scopes[scope_id])
                    continue
                directory = self.shelf.new_directory()
                try:
                    self.index.write_snapshot(scope, directory)
                    digest = self.shelf.keep(directory)
                except BaseException:
                    shutil.rmtree(directory, ignore_errors=True)
                    raise
                scopes[scope_id] = digest
                mapped[scope_id] = self.index.open_snapshot(self.shelf.root / digest)
        except BaseException:  # the round is not published: what it wrote goes
            for snapshot in mapped.values():
                shutil.rmtree(snapshot.directory, ignore_errors=True)
            raise
        made = Round(position, scopes, round(time.time(), 3))
        self.shelf.publish(made)
        for scope_id, snapshot in mapped.items():
            self.index.stand_on(scope_id, snapshot, position)
        self.standing = made
        kept = set(scopes.values()) | (set(published[0].scopes.values()) if published else set())  # parts
        if published:  # the round before this one is the oldest whose tail the feed keeps
            self.shelf.store.trim_records(tier, self.shelf.namespace, self.shelf.feed, published[0].position)  # type: ignore[arg-type]
        if len(published) > 1:
            self.shelf.drop(set(published[1].scopes.values()), kept)
        self._forget_others([made, *published[:1]], made.at)
        log.info("imgcache: wrote an index snapshot round of %s (%d scopes) as of %s",
                 self.shelf.namespace, len(scopes), position)
        return made
