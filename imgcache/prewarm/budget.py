"""The run's dollar budget: every call reserves its estimated price before it is made.

Amounts are kept in whole micro-dollars, so that adding up hundreds of $0.04 calls never
drifts past the limit by a float's rounding. A reservation is settled once: ``spent`` when the
call succeeded, ``uncertain`` when no answer came back (a timeout: the call may have been
carried out and billed, so it keeps counting against the budget), or released when the API
refused it. Concurrent calls cannot overshoot: the check and the reservation are one step.

The budget is the run's (one process's): ``--max-usd 20`` given to each of four workers
lets them spend up to $80 together.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ..errors import ConfigError

_MICRO = 1_000_000


def _micro(usd: float) -> int:
    return math.ceil(round(usd * _MICRO, 3))


@dataclass(frozen=True)
class Reservation:
    micro: int


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

    def reserve(self, usd: float | None) -> Reservation | None:
        """Hold ``usd`` for a call; None if that would pass the limit (or the price is unknown
        while there is a limit: an unpriced call could cost anything)."""
        if usd is None:
            return None if self._limit is not None else Reservation(0)
        amount = _micro(usd)
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
        with self._lock:
            return self._reserved > 0 and self._spent + self._uncertain + _micro(usd) <= self._limit
