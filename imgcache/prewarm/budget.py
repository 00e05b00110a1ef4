"""The job's dollar budget: every call reserves its estimated price before it is made.

A reservation is settled once: ``spent`` when the call succeeded, ``uncertain`` when no answer
came back (a timeout: the call may have been carried out and billed, so it keeps counting
against the budget), or released when the API refused it. The check and the reservation are
one step, so concurrent calls cannot overshoot.

The arithmetic is the live calls' (:class:`~imgcache.spend.spending.Spending`, in whole
micro-dollars). :meth:`Budget.share` puts the job's budget in the store's spending ledger
(Redis, else the local directory) under the job's name, so every worker of the job draws on
one ``--max-usd``, and a job resumed within a day goes on from what it spent; while the ledger
is unreachable each worker keeps its own books from the last figure it gave, and writes its
spending back when it answers again. A dry run never writes to it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BudgetExceeded, ConfigError
from ..spend.config import Budget as Limit
from ..spend.spending import MICRO, Hold, Spending, to_micro
from ..stats import Stats

if TYPE_CHECKING:
    from ..store.ledger import TierLedger

JOB_KEEP_SECONDS = 86400.0
"""A job's ledger outlives its last call by a day: a resumed run goes on from what it spent."""


@dataclass(frozen=True)
class Reservation:
    micro: int
    hold: Hold | None = None


class Budget:
    def __init__(self, max_usd: float | None) -> None:
        if max_usd is not None and not (max_usd >= 0 and math.isfinite(max_usd)):
            raise ConfigError(f"max_usd must be a non-negative number of dollars, not {max_usd!r}")
        self.max_usd = max_usd
        self._spending = None if max_usd is None else self._draws(None, "local")
        self._spent = 0
        self._uncertain = 0
        self._lock = threading.Lock()

    def _draws(self, ledger: TierLedger | None, job: str) -> Spending:
        assert self.max_usd is not None
        return Spending(Limit(self.max_usd, warn_at=None), "prewarm", ledger, Stats(),
                        job=(f"prewarm-{job}", JOB_KEEP_SECONDS))

    def share(self, ledger: TierLedger | None, job: str) -> None:
        """Draw on the store's ledger under ``job`` (its name): every worker of the job shares
        the limit. Without a limit or a ledger, nothing changes."""
        if self.max_usd is not None and ledger is not None:
            self._spending = self._draws(ledger, job)

    def reserve(self, usd: float | None) -> Reservation | None:
        """Hold ``usd`` for a call; None if that would pass the limit (or the price is unknown
        while there is a limit: an unpriced call could cost anything)."""
        if self._spending is None:  # no limit: counted for the report only
            return Reservation(0 if usd is None else to_micro(usd))
        if usd is None:
            return None
        try:
            hold = self._spending.reserve(usd, "prewarm call")
        except BudgetExceeded:
            return None
        return Reservation(hold.micro if hold is not None else 0, hold)

    def settle(self, reservation: Reservation, outcome: str) -> None:
        """``outcome``: ``spent``, ``uncertain`` or ``released``."""
        with self._lock:
            if outcome == "spent":
                self._spent += reservation.micro
            elif outcome == "uncertain":
                self._uncertain += reservation.micro
        if self._spending is not None and reservation.hold is not None:
            cost = {"spent": reservation.micro / MICRO, "uncertain": None}.get(outcome, 0.0)
            self._spending.settle(reservation.hold, cost)

    @property
    def spent_usd(self) -> float:
        """What this worker's calls spent."""
        return self._spent / MICRO

    @property
    def uncertain_usd(self) -> float:
        return self._uncertain / MICRO

    def may_fit(self, usd: float | None) -> bool:
        """Could a call of ``usd`` still fit once the calls in flight are settled (they may
        be refused and give their reservation back)?"""
        if self._spending is None:
            return True
        if usd is None:
            return False
        status = self._spending.status()
        return status["held_usd"] > 0 and status["spent_usd"] + usd <= self.max_usd  # type: ignore[operator]
