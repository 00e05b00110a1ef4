"""How a cache's upstream calls draw on its budget.

Before a miss goes upstream, its list price (the pricing table's estimate) is reserved in the
window's ledger; BudgetExceeded if that would pass the limit. After the call the hold is
settled with the real cost (a chat's billed usage), with 0 when the call failed with an
answer from the API, and with the estimate when no answer came (a timeout may have been
billed). Hits never touch the budget.

The ledger is the widest-reaching tier's (Redis, else the local directory; see
:mod:`imgcache.store.ledger`), so every process sharing it shares the budget. While it is
unreachable this process keeps its own books, starting from the last figure the shared
ledger gave (logged once per outage): the fleet may then overspend by what each worker can
spend of the remainder. What it spent meanwhile, and settlements that failed, are written to
the shared ledger when it answers again.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceeded, TierError
from ..store.ledger import Ledgered, MemoryLedger, TierLedger
from .alerts import Alerts
from .config import MAX_USD, Budget, Window
from .outcomes import classify

if TYPE_CHECKING:
    from ..stats import Stats

log = logging.getLogger("imgcache")

MICRO = 1_000_000
HOLD_SECONDS = 600.0
"""How long a call's hold lasts without a settlement (its process died): then it is spent."""
KEEP_SECONDS = 86400.0
"""How long a window's ledger outlives the window (for ``imgcache stats``)."""
_UNLIMITED = 2**52  # the limit of a charge: what was spent is recorded whatever the budget says
_PENDING_MAX = 10_000
_PAID_PER_STEP = 50  # debts written back per ledger step (the rest at the next ones)


@dataclass(frozen=True)
class Hold:
    """A reservation: where it was taken, and how much."""

    window: Window
    hold_id: str
    micro: int
    shared: bool


class Spending:
    """One budget's draws for a cache; see the module doc. ``shared`` is the tier's ledger
    (None: this process's books only)."""

    def __init__(self, budget: Budget, owner: str, shared: TierLedger | None, stats: Stats, *,
                 clock: Callable[[], float] = time.time, hold_seconds: float = HOLD_SECONDS,
                 job: tuple[str, float] | None = None) -> None:
        self.budget = budget
        self.job = job
        """(window name, seconds its ledger outlives its last step) of a job's own budget
        (the prewarm job's ``--max-usd``), instead of the budget's calendar windows."""
        self.owner = owner
        self.shared = shared
        self.stats = stats
        self.clock = clock
        self.hold_ms = int(hold_seconds * 1000)
        self.limit = math.floor(round(budget.usd * MICRO, 3))
        self.warn = -1 if budget.warn_at is None else math.floor(self.limit * budget.warn_at)
        self.alerts = Alerts.for_url(budget.webhook) if budget.webhook else None
        self.local = MemoryLedger(clock)
        self._lock = threading.Lock()
        self._last_known: dict[str, int] = {}  # window -> spent and held, as the shared ledger said last
        self._pending: list[tuple[Window, str, int, bool]] = []  # (window, hold id, micro, a charge) owed
        self._outage = False
        self._said: set[tuple[str, str]] = set()  # (what, window) logged already

    # -- a call's draw ---------------------------------------------------------------------------

    def reserve(self, usd: float | None, operation: str) -> Hold | None:
        """Hold ``usd`` for one upstream call (None: not priced; see ``Budget.unpriced``);
        BudgetExceeded if it does not fit."""
        now = self.clock()
        window = self._window(now)
        if usd is None:
            if self.budget.unpriced == "refuse":
                self.stats.add({"budget.refused": 1})
                raise BudgetExceeded(f"{operation} has no known price and the budget refuses unpriced calls",
                                     limit_usd=self.budget.usd, spent_usd=0.0, window=window.name, retry_after=None)
            self._say_once("unpriced", "", "imgcache: %s has no known price; it is not counted against the budget",
                           operation)
            self.stats.add({"budget.unpriced": 1})
            return None
        micro = to_micro(usd)
        hold_id = secrets.token_hex(8)
        keep = self._keep_ms(window, now)
        answer, shared = self._step(window, lambda ledger: ledger.reserve(
            window.name, hold_id, micro, self.limit, self.warn, self.hold_ms, keep))
        if not answer.granted:
            self.stats.add({"budget.refused": 1})
            spent = (answer.spent + answer.held) / MICRO
            if self._say_once("exhausted", window.name, "imgcache: budget %s cannot pay for another %s in window %s "
                              "($%.2f spent or held); misses that do not fit are refused until it resets",
                              self.budget.describe(), operation, window.name, spent):
                self._alert("budget_exhausted", window, answer)
            retry = window.seconds_left(now)
            raise BudgetExceeded(
                f"this call (${usd:.4f}) would pass the budget of {self.budget.describe()}: ${spent:.4f} spent or held "
                f"in window {window.name}" + (f"; it resets in {math.ceil(retry)} s" if retry is not None else ""),
                limit_usd=self.budget.usd, spent_usd=spent, window=window.name, retry_after=retry)
        self._after(window, answer)
        return Hold(window, hold_id, micro, shared)

    def settle(self, hold: Hold | None, usd: float | None) -> None:
        """Settle ``hold`` with what the call cost (None: its estimate, the call may have been
        billed; 0: refused by the API). Never raises."""
        if hold is None:
            return
        actual = hold.micro if usd is None else to_micro(usd)
        keep = self._keep_ms(hold.window, self.clock())
        try:
            if hold.shared:
                answer, _ = self._step(hold.window, lambda ledger: ledger.settle(
                    hold.window.name, hold.hold_id, actual, self.limit, self.warn, keep), shared_only=True)
            else:
                answer = self.local.settle(hold.window.name, hold.hold_id, actual, self.limit, self.warn, keep)
                if self.shared is not None:  # spent while the shared ledger was away: owed to it
                    self._owe(hold.window, _charge_id(), actual, charge=True)
        except TierError:
            self._owe(hold.window, hold.hold_id, actual)  # the same settle, sent again later
            return
        self._after(hold.window, answer)

    def charge(self, usd: float) -> None:
        """Record what a call that held nothing cost (its price was not known before it):
        spent is spent, whatever the limit. Never raises."""
        window, hold_id, micro = self._window(self.clock()), _charge_id(), to_micro(usd)
        try:
            answer, _ = self._step(window, lambda ledger: self._charge(ledger, window, hold_id, micro),
                                   shared_only=self.shared is not None)
        except TierError:
            self._charge(self.local, window, hold_id, micro)  # this process's books, meanwhile
            self._owe(window, hold_id, micro, charge=True)  # the same charge, sent again later
            return
        self._after(window, answer)

    def settle_failure(self, hold: Hold | None, exc: BaseException) -> None:
        """Settle after the upstream call raised: 0 if the API answered (it does not bill a
        refusal), the estimate if no answer may have come (a timeout, a dropped connection)."""
        self.settle(hold, None if _may_have_run(exc) else 0.0)

    # -- what it says ------------------------------------------------------------------------------

    def last_used(self) -> float:
        """USD spent and held in the current window as the ledger said last (no I/O: for gauges)."""
        window = self._window(self.clock())
        with self._lock:
            known = self._last_known.get(window.name)
        if known is None:
            known = self.local.peek(window.name)
        return known / MICRO

    def status(self) -> dict[str, Any]:
        """The budget's figures for ``stats()``: limit, window, spent and held, reset time."""
        now = self.clock()
        window = self._window(now)
        try:
            answer, shared = self._step(window, lambda ledger: ledger.read(window.name, self.limit))
        except TierError:
            answer, shared = self.local.read(window.name, self.limit), False
        return {
            "limit_usd": self.budget.usd, "per": self.budget.per, "scope": self.budget.scope,
            "window": window.name, "spent_usd": answer.spent / MICRO, "held_usd": answer.held / MICRO,
            "remaining_usd": max(0, self.limit - answer.spent - answer.held) / MICRO,
            "warn_at": self.budget.warn_at, "shared": shared,
            "resets_at": None if window.resets_at is None else _iso(window.resets_at),
        }

    # -- ledgers -------------------------------------------------------------------------------------

    def _step(self, window: Window, op: Callable[[TierLedger], Ledgered], *, shared_only: bool = False
              ) -> tuple[Ledgered, bool]:
        """``op`` on the shared ledger, else (unreachable) on this process's books."""
        if self.shared is not None:
            try:
                answer = op(self.shared)
            except TierError as exc:
                self.stats.add({"budget.ledger_errors": 1})
                if not self._outage:
                    self._outage = True
                    log.warning("imgcache: the shared budget ledger is unreachable (%s); this process keeps its "
                                "own books from the last known figure until it answers again", exc)
                if shared_only:
                    raise
            else:
                with self._lock:
                    self._last_known[window.name] = answer.spent + answer.held
                    self._outage = False
                self._pay_debts()
                return answer, True
        with self._lock:
            known = self._last_known.get(window.name, 0)
        self.local.seed(window.name, known)
        return op(self.local), False

    def _owe(self, window: Window, hold_id: str, micro: int, *, charge: bool = False) -> None:
        """A settle or a charge to send the shared ledger when it answers."""
        with self._lock:
            if len(self._pending) < _PENDING_MAX:
                self._pending.append((window, hold_id, micro, charge))

    def _pay_debts(self) -> None:
        """Send a few of the debts (a caller's step must stay short; the rest go with the next)."""
        with self._lock:
            owed, self._pending = self._pending[:_PAID_PER_STEP], self._pending[_PAID_PER_STEP:]
        ledger = self.shared
        assert ledger is not None
        for at, (window, hold_id, micro, charge) in enumerate(owed):
            try:
                if charge:
                    self._charge(ledger, window, hold_id, micro)
                else:
                    ledger.settle(window.name, hold_id, micro, self.limit, self.warn,
                                  self._keep_ms(window, self.clock()))
            except TierError:
                with self._lock:
                    self._pending[:0] = owed[at:]
                return

    def _window(self, now: float) -> Window:
        return Window(self.job[0], None) if self.job is not None else self.budget.window(now)

    def _charge(self, ledger: TierLedger, window: Window, hold_id: str, micro: int) -> Ledgered:
        """Spent is spent: a hold of ``micro`` past any limit, settled at once (each step
        idempotent, so sending the pair again changes nothing)."""
        keep = self._keep_ms(window, self.clock())
        ledger.reserve(window.name, hold_id, micro, _UNLIMITED, -1, self.hold_ms, keep)
        return ledger.settle(window.name, hold_id, micro, self.limit, self.warn, keep)

    def _keep_ms(self, window: Window, now: float) -> int:
        if self.job is not None:
            return int(self.job[1] * 1000)
        if window.resets_at is None:
            return 0  # a fixed budget's ledger is kept for ever
        return int((window.resets_at - now + KEEP_SECONDS) * 1000)

    # -- warnings ------------------------------------------------------------------------------------

    def _after(self, window: Window, answer: Ledgered) -> None:
        if answer.crossed:
            spent = (answer.spent + answer.held) / MICRO
            log.warning("imgcache: budget %s is %.0f%% used in window %s ($%.2f spent or held)",
                        self.budget.describe(), 100 * spent / self.budget.usd if self.budget.usd else 100,
                        window.name, spent)
            self.stats.add({"budget.warnings": 1})
            self._alert("budget_warning", window, answer)

    def _alert(self, event: str, window: Window, answer: Ledgered) -> None:
        if self.alerts is None:
            return
        self.alerts.send({
            "event": event, "budget": self.owner, "scope": self.budget.scope, "window": window.name,
            "limit_usd": self.budget.usd, "spent_usd": answer.spent / MICRO, "held_usd": answer.held / MICRO,
            "warn_at": self.budget.warn_at, "at": _iso(self.clock()),
            "resets_at": None if window.resets_at is None else _iso(window.resets_at),
        })

    def _say_once(self, what: str, window: str, message: str, *args: Any) -> bool:
        with self._lock:
            if (what, window) in self._said:
                return False
            self._said.add((what, window))
        log.warning(message, *args)
        return True


def _may_have_run(exc: BaseException) -> bool:
    """Whether a failed call may still have been carried out (and billed): no answer came, or
    the caller stopped waiting for it (a cancelled task, an interrupt)."""
    return not isinstance(exc, Exception) or type(exc).__name__ == "CancelledError" or classify(exc).maybe_billed


def _charge_id() -> str:
    return "charge-" + secrets.token_hex(8)


def to_micro(usd: float) -> int:
    """USD as whole micro-dollars, rounded up, between 0 and :data:`MAX_USD`."""
    return math.ceil(round(min(max(usd, 0.0), MAX_USD) * MICRO, 3))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
