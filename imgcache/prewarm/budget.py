"""The job's dollar budget: every call reserves its estimated price before it is made.

Amounts are kept in whole micro-dollars, so that adding up hundreds of $0.04 calls never
drifts past the limit by a float's rounding. A reservation is settled once: ``spent`` when the
call succeeded, ``uncertain`` when no answer came back (a timeout: the call may have been
carried out and billed, so it keeps counting against the budget), or released when the API
refused it. Concurrent calls cannot overshoot: the check and the reservation are one step.

The budget is the job's: :meth:`Budget.share` puts it in the store's spending ledger (Redis,
else the local directory; :mod:`imgcache.store.ledger`) under the job's name, so every worker
of the job draws on one ``--max-usd``, and a job resumed within a day goes on from what it
spent. While the ledger is unreachable each worker keeps its own books (logged once); a dry
run never writes to it.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, TierError

if TYPE_CHECKING:
    from ..store.ledger import TierLedger

log = logging.getLogger("imgcache")
_MICRO = 1_000_000
_HOLD_MS = 900_000  # a worker that dies mid-call: its hold is spent after 15 minutes
_KEEP_MS = 86_400_000  # a job's ledger outlives its last call by a day (a resumed run goes on)


def _micro(usd: float) -> int:
    return math.ceil(round(usd * _MICRO, 3))


@dataclass(frozen=True)
class Reservation:
    micro: int
    hold_id: str = ""
    shared: bool = False


class Budget:
    def __init__(self, max_usd: float | None) -> None:
        if max_usd is not None and not (max_usd >= 0 and math.isfinite(max_usd)):
            raise ConfigError(f"max_usd must be a non-negative number of dollars, not {max_usd!r}")
        self.max_usd = max_usd
        self._limit = None if max_usd is None else math.floor(round(max_usd * _MICRO, 3))
        self._reserved = 0
        self._spent = 0
        self._uncertain = 0
        self._lock = threading.Lock()
        self._ledger: TierLedger | None = None
        self._window = ""

    def share(self, ledger: TierLedger | None, job: str) -> None:
        """Draw on the store's ledger under ``job`` (its name): every worker of the job shares
        the limit. Without a limit or a ledger, nothing changes."""
        if self._limit is not None and ledger is not None:
            self._ledger, self._window = ledger, f"prewarm-{job}"

    def _shared(self, op: str, *args: object) -> object | None:
        """``op`` on the ledger; None (and this worker's own books from now on) if it fails."""
        try:
            return getattr(self._ledger, op)(self._window, *args)
        except TierError as exc:
            log.warning("imgcache: prewarm budget ledger unreachable (%s); this worker counts --max-usd "
                        "on its own from now on", exc)
            self._ledger = None
            return None

    def reserve(self, usd: float | None) -> Reservation | None:
        """Hold ``usd`` for a call; None if that would pass the limit (or the price is unknown
        while there is a limit: an unpriced call could cost anything)."""
        if usd is None:
            return None if self._limit is not None else Reservation(0)
        amount = _micro(usd)
        if self._ledger is not None:
            hold_id = secrets.token_hex(8)
            answer = self._shared("reserve", hold_id, amount, self._limit, -1, _HOLD_MS, _KEEP_MS)
            if answer is not None:
                if not answer.granted:  # type: ignore[attr-defined]
                    return None
                with self._lock:
                    self._reserved += amount
                return Reservation(amount, hold_id, shared=True)
        with self._lock:
            if self._limit is not None and self._reserved + self._spent + self._uncertain + amount > self._limit:
                return None
            self._reserved += amount
        return Reservation(amount)

    def settle(self, reservation: Reservation, outcome: str) -> None:
        """``outcome``: ``spent``, ``uncertain`` or ``released``."""
        with self._lock:
            self._reserved -= reservation.micro
            if outcome == "spent":
                self._spent += reservation.micro
            elif outcome == "uncertain":
                self._uncertain += reservation.micro
        if reservation.shared and self._ledger is not None:
            actual = 0 if outcome == "released" else reservation.micro
            self._shared("settle", reservation.hold_id, reservation.micro, actual, self._limit, -1, _KEEP_MS)

    @property
    def spent_usd(self) -> float:
        return self._spent / _MICRO

    @property
    def uncertain_usd(self) -> float:
        return self._uncertain / _MICRO

    def may_fit(self, usd: float | None) -> bool:
        """Could a call of ``usd`` still fit once the calls in flight are settled (they may
        be refused and give their reservation back)?"""
        if self._limit is None:
            return True
        if usd is None:
            return False
        if self._ledger is not None:
            answer = self._shared("read", self._limit)
            if answer is not None:
                return answer.held > 0 and answer.spent + _micro(usd) <= self._limit  # type: ignore[attr-defined]
        with self._lock:
            return self._reserved > 0 and self._spent + self._uncertain + _micro(usd) <= self._limit
