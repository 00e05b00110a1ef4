"""The prewarm job: read, deduplicate, look up, then generate what is missing within rate
limits and a budget, cooperating with other workers.

One prompt's path::

    item ─► problem? (unknown model, too long, ...) ─► reported with its line, skipped
         ─► same request key as an earlier line ─────► duplicate, costs nothing
         ─► cached (exact manifest, or a verified semantic match) ─► skipped
         ─► refused recently (by any worker) ─────────► skipped
         ─► claim (another worker holds it: look again later)
         ─► cached now? (stored while we were claiming) ─► done by another worker
         ─► reserve its price in the budget (does not fit: over budget, skipped)
         ─► token buckets (requests / images per minute, per model)
         ─► cache.fetch(...) ─► stored ─► release the claim
                │ 429: pause the model's buckets (Retry-After or back-off), again
                │ 5xx, timeout: back off, again (bounded)
                │ 4xx refusal: record it, skip
                │ 401, no quota: stop the run

Worker threads (``concurrency``) take prompts from one queue; a prompt claimed by another
worker goes back to the queue with a delay. Stopping (``stop()``, Ctrl-C, SIGTERM through
the CLI) takes no new prompt, lets the calls in flight finish and store their results, and
releases every claim; a second interrupt abandons the calls in flight. Running again skips
what is stored: the cache entry is the "done" marker.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ImgcacheError
from ..spend.limiter import ACCOUNT, LocalBuckets, RateLimiter, Rates
from ..spend.outcomes import MAX_WAIT, Backoff, Outcome, classify
from .budget import Budget, Reservation
from .claims import Claims, claims_for
from .inputs import InputProblem, PrewarmItem
from .report import (
    MAX_LISTED,
    RUNS_FEED,
    RUNS_KEPT,
    Failure,
    LogProgress,
    PrewarmReport,
    Progress,
    publish_run,
    recent_runs,
)

if TYPE_CHECKING:
    from ..cache import Cache
    from .upstream import Call, OpenAIUpstream

log = logging.getLogger("imgcache.prewarm")
__all__ = ["RUNS_FEED", "RUNS_KEPT", "Failure", "LogProgress", "PrewarmJob", "PrewarmReport", "Progress",
           "recent_runs"]  # the report's names are imported from here too (the package, the CLI)

_JOB = re.compile(r"[A-Za-z0-9._-]{1,64}")


def job_name(works: Sequence[_Work]) -> str:
    """A job's default name: the digest of its requests' keys, the same on every worker given
    the same input and parameters."""
    digest = hashlib.sha256()
    for key in sorted(work.key for work in works):
        digest.update(key.encode())
    return digest.hexdigest()[:24]


@dataclass
class _Work:
    item: PrewarmItem
    call: Call
    price: float | None
    images: int
    scope: str
    held_elsewhere: bool = False
    semantic_checked: bool = False

    @property
    def key(self) -> str:
        return self.call.request.key


class _Queue:
    """Prompts for the worker threads: ready ones in input order, and ones put back for later
    (claimed by another worker). ``get`` returns None when there is nothing left (or the job
    is stopping)."""

    def __init__(self, works: Iterable[_Work]) -> None:
        self._ready = list(works)[::-1]  # popped from the end: input order
        self._later: list[tuple[float, int, _Work]] = []
        self._seq = itertools.count()
        self._active = 0
        self._closed = False
        self._cond = threading.Condition()

    def get(self) -> _Work | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if self._ready:
                    self._active += 1
                    return self._ready.pop()
                if self._later and self._later[0][0] <= now:
                    self._active += 1
                    return heapq.heappop(self._later)[2]
                if not self._later and self._active == 0:
                    return None
                self._cond.wait(None if not self._later else self._later[0][0] - now)

    def done(self, work: _Work, again_in: float | None = None) -> None:
        with self._cond:
            self._active -= 1
            if again_in is not None:
                heapq.heappush(self._later, (time.monotonic() + again_in, next(self._seq), work))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class PrewarmJob:
    """One prewarm run over a cache; see :func:`imgcache.prewarm.prewarm` for the options."""

    def __init__(
        self,
        cache: Cache,
        upstream: OpenAIUpstream,
        *,
        rpm: float | None = None,
        ipm: float | None = None,
        burst: float = 1.0,
        concurrency: int = 4,
        max_usd: float | None = None,
        dry_run: bool = False,
        retries: int = 3,
        max_rate_limited: int = 10,
        lease: float = 30.0,
        refusal_ttl: float = 86400.0,
        retry_refused: bool = False,
        semantic: bool = True,
        backoff: Backoff | None = None,
        max_wait: float = MAX_WAIT,
        price: Callable[[dict[str, Any]], float | None] | None = None,
        progress: Progress | None = None,
        limiter: RateLimiter | None = None,
        claims: Claims | None = None,
        job: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency!r}")
        if retries < 0 or max_rate_limited < 0:
            raise ConfigError("retries must not be negative")
        if not lease > 0:
            raise ConfigError(f"lease must be positive seconds, not {lease!r}")
        self.cache = cache
        self.upstream = upstream
        self.rates = Rates.per_minute(rpm, ipm, burst=burst)
        self._limits = (rpm, ipm, burst)
        self.concurrency = concurrency
        self.budget = Budget(max_usd)
        self.dry_run = dry_run
        self.retries = retries
        self.max_rate_limited = max_rate_limited
        self.lease = lease
        self.refusal_ttl = refusal_ttl
        self.retry_refused = retry_refused
        self.semantic = semantic
        self.backoff = backoff or Backoff()
        self.max_wait = max_wait
        self._price = price
        if job is not None and not _JOB.fullmatch(job):
            raise ConfigError(f"job {job!r} must be 1-64 letters, digits, '.', '_' or '-'")
        self.job = job
        """The job's name: its workers share --max-usd (default: from its requests' keys)."""
        self.progress: Progress = progress or LogProgress()
        self._limiter = limiter
        self._claims = claims
        self.report = PrewarmReport(dry_run=dry_run, max_usd=max_usd, rpm=rpm, ipm=ipm)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._finished = threading.Event()
        self._queue: _Queue | None = None

    # -- control (any thread) -----------------------------------------------------------------

    def stop(self) -> None:
        """Take no new prompt; the calls in flight finish and are stored."""
        if not self._stop.is_set():
            self._stop.set()
            self.report.interrupted = True
            self._event("stopping", None, "stopping: letting the calls in flight finish "
                        "(interrupt again to abandon them)")
            if self._queue is not None:
                self._queue.close()

    def abandon(self) -> None:
        """Stop at once: release every claim and return without waiting for calls in flight."""
        self.stop()
        self._abandon.set()

    # -- the run ------------------------------------------------------------------------------

    def run(self, entries: Iterable[PrewarmItem | InputProblem]) -> PrewarmReport:
        started = time.monotonic()
        works = self._load(entries)
        report = self.report
        self.progress.start(report, len(works))
        if not self.dry_run:  # one --max-usd for every worker of the job (a dry run spends nothing)
            self.budget.share(self.cache.spending_ledger(), self.job or job_name(works))
            self.cache.stats_counters.add({"prewarm.runs": 1, "prewarm.skipped": report.duplicates,
                                           "prewarm.generated": 0, "prewarm.failed": 0,
                                           "prewarm.rate_limited": 0, "prewarm.spent_usd": 0.0})
        # A dry run claims nothing, but sees the refusals recorded by earlier runs.
        claims = self._claims or claims_for(self.cache, lease=self.lease, refusal_ttl=self.refusal_ttl)
        self._claims = claims
        if self._limiter is None:
            rpm, ipm, burst = self._limits  # the image bucket holds the largest call's images
            self.rates = Rates.per_minute(rpm, ipm, burst=burst,
                                          images_per_request=max((w.images for w in works), default=1))
            shared = self.cache.rate_buckets(ACCOUNT)  # the account's limits: Redis, where there is one
            self._limiter = RateLimiter(self.rates, shared if shared is not None else LocalBuckets())
        self._queue = queue = _Queue(works)
        if self._stop.is_set():
            queue.close()
        threads = [threading.Thread(target=self._worker, name=f"imgcache-prewarm-{i}", daemon=True)
                   for i in range(min(self.concurrency, len(works)))]
        self._running = len(threads)
        if not threads:
            self._finished.set()
        for thread in threads:
            thread.start()
        # Ctrl-C (and SIGTERM where it raises KeyboardInterrupt, as the CLI sets it): the first
        # stops, the second abandons. The signals are counted, not raised, while the run waits:
        # a KeyboardInterrupt raised inside Event.wait can leave the event's lock released
        # twice (RuntimeError: release unlocked lock) instead of reaching the except clause.
        with _counted_interrupts() as interrupts:
            while True:
                try:
                    if interrupts.count > 1:
                        self.abandon()
                    elif interrupts.count:
                        self.stop()
                    if self._abandon.is_set() or self._finished.wait(0.2):
                        break
                except KeyboardInterrupt:  # a handler of the caller's own that raises
                    interrupts.count += 1
        if self._abandon.is_set():
            report.abandoned = True
        claims.close()
        with self._lock:
            report.not_started = max(0, report.unique - report.done)
        report.elapsed = time.monotonic() - started
        if self.dry_run:
            report.estimated_usd = self.budget.spent_usd
        else:
            report.spent_usd = self.budget.spent_usd
            report.uncertain_usd = self.budget.uncertain_usd
        if not self.dry_run:
            self._publish(claims)
        self.progress.finish(report)
        return report

    def _load(self, entries: Iterable[PrewarmItem | InputProblem]) -> list[_Work]:
        """Check every entry, build its request, drop duplicates (in input order)."""
        report = self.report
        works: list[_Work] = []
        seen: set[str] = set()
        for entry in entries:
            report.lines += 1
            if isinstance(entry, InputProblem):
                self._problem(entry)
                continue
            message = self.upstream.problem(entry)
            if message is None:
                try:
                    call = self.upstream.build(entry)
                except ImgcacheError as exc:
                    message = str(exc)
            if message is not None:
                self._problem(InputProblem(entry.line, message, entry.source))
                continue
            if call.request.key in seen:
                report.duplicates += 1
                continue
            seen.add(call.request.key)
            price = self._price(call.request.params) if self._price is not None else self.upstream.price(call)
            works.append(_Work(entry, call, price, self.upstream.images(call), self.upstream.scope(call)))
        report.unique = len(works)
        return works

    def _problem(self, problem: InputProblem) -> None:
        report = self.report
        if not problem.blank:
            report.invalid += 1
        if len(report.problems) < MAX_LISTED:
            report.problems.append(problem)
        if not problem.blank:
            self._event("invalid", None, str(problem))

    # -- worker threads -------------------------------------------------------------------------

    def _worker(self) -> None:
        queue = self._queue
        assert queue is not None
        try:
            while (work := queue.get()) is not None:
                again_in = None
                try:
                    again_in = self._process(work)
                except Exception as exc:  # a bug or a broken tier: cost this prompt, not the run
                    log.exception("prewarm: %s", work.item.where)
                    self._settle(work, "failed", f"{type(exc).__name__}: {exc}")
                finally:
                    queue.done(work, again_in)
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._finished.set()

    def _process(self, work: _Work) -> float | None:
        """Settle one prompt, or return in how many seconds to look at it again."""
        cache, claims = self.cache, self._claims
        assert claims is not None
        key = work.key
        if self._stop.is_set():
            return None
        if cache.contains_key(key):
            self._settle(work, "by_others" if work.held_elsewhere else "cached")
            return None
        if self.semantic and not work.semantic_checked:
            work.semantic_checked = True
            # The cache's own near-match step, without stats (a prewarm lookup is not a
            # caller's request); a match is stored as an alias, as a live lookup would.
            if cache.semantic_options is not None and cache.lookup(work.call.request, near=True):
                self._settle(work, "semantic")
                return None
        if not self.retry_refused:
            reason = claims.refusal(key)
            if reason is not None:
                self._settle(work, "refused_before", reason)
                return None
        if self.dry_run:
            reservation = self.budget.reserve(work.price)
            if reservation is None:
                self._settle(work, "over_budget", self._over_budget(work))
            else:
                self.budget.settle(reservation, "spent")
                self._settle(work, "would_generate")
            return None
        if not claims.claim(key):
            work.held_elsewhere = True
            return min(1.0, self.lease / 4)
        try:
            if cache.contains_key(key):  # stored by another worker before we claimed it
                self._settle(work, "by_others")
                return None
            reservation = self.budget.reserve(work.price)
            if reservation is None:
                if self.budget.may_fit(work.price):
                    return 0.2  # it fits if a call in flight gives its reservation back
                self._settle(work, "over_budget", self._over_budget(work))
                return None
            if work.held_elsewhere:
                with self._lock:
                    self.report.taken_over += 1
            self._generate(work, reservation)
            return None
        finally:
            claims.release(key)

    def _over_budget(self, work: _Work) -> str:
        if work.price is None:
            return "its price is unknown, and --max-usd needs one"
        return f"${work.price:.3f} does not fit in what is left of ${self.budget.max_usd:.2f}"

    def _generate(self, work: _Work, reservation: Reservation) -> None:
        """Call upstream through the cache until it is stored, refused, or out of retries."""
        limiter = self._limiter
        assert limiter is not None
        transient = limited = 0
        while True:
            if not limiter.acquire(work.scope, work.images, self._stop):
                self.budget.settle(reservation, "released")
                return  # stopped: counted as not started
            try:
                called = self.upstream.fetch(work.call, self._count_call)
            except Exception as exc:
                outcome = classify(exc, cap=self.max_wait)
                if outcome.kind == "rate_limited" and limited < self.max_rate_limited:
                    limited += 1
                    wait = outcome.retry_after if outcome.retry_after is not None else \
                        self.backoff.delay(limited - 1)
                    limiter.pause(work.scope, wait)
                    how = "Retry-After" if outcome.retry_after is not None else "back-off"
                    self._retry(work, "rate_limited", f"{outcome.status} {outcome.code or 'rate limited'}: "
                                f"all {work.scope} calls wait {wait:.1f} s ({how})")
                    continue
                if outcome.kind == "transient" and transient < self.retries:
                    transient += 1
                    if outcome.maybe_billed:  # the attempt may have cost: book it, reserve anew
                        self.budget.settle(reservation, "uncertain")
                        again = self.budget.reserve(work.price)
                        if again is None:
                            self._settle(work, "over_budget", f"{outcome.reason}; no budget left to retry")
                            return
                        reservation = again
                    delay = self.backoff.delay(transient - 1)
                    self._retry(work, "retry", f"{work.item.where or 'prompt'}: {outcome.reason[:80]}; "
                                f"retry {transient}/{self.retries} in {delay:.1f} s")
                    if self._stop.wait(delay):
                        self.budget.settle(reservation, "released")
                        return
                    continue
                self._failed(work, outcome, reservation)
                return
            if not called:  # the cache answered: a live caller or another process stored it
                self.budget.settle(reservation, "released")
                self._settle(work, "by_others")
            elif self.cache.contains_key(work.key):
                self.budget.settle(reservation, "spent")
                self._settle(work, "generated")
            else:
                self.budget.settle(reservation, "spent")
                self._settle(work, "failed", "generated, but the result could not be stored (see the log)")
            return

    def _failed(self, work: _Work, outcome: Outcome, reservation: Reservation) -> None:
        self.budget.settle(reservation, "uncertain" if outcome.maybe_billed else "released")
        if outcome.kind == "refused":
            assert self._claims is not None
            self._claims.refuse(work.key, outcome.reason)
            self._settle(work, "refused", outcome.reason)
        elif outcome.kind == "fatal":
            with self._lock:
                self.report.fatal = self.report.fatal or outcome.reason
            self._settle(work, "failed", outcome.reason)
            self._event("fatal", work.item, f"stopping the run: {outcome.reason}")
            self.stop()
        else:
            self._settle(work, "failed", outcome.reason)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _count_call(self) -> None:
        with self._lock:
            self.report.calls += 1

    def _retry(self, work: _Work, kind: str, detail: str) -> None:
        with self._lock:
            if kind == "rate_limited":
                self.report.rate_limited += 1
            self.report.retries += 1
        self.cache.stats_counters.add({"prewarm.rate_limited": int(kind == "rate_limited")})
        self._event(kind, work.item, detail)

    def _settle(self, work: _Work, kind: str, reason: str = "") -> None:
        report = self.report
        with self._lock:
            setattr(report, kind, getattr(report, kind) + 1)
            if kind == "generated":
                report.images += work.images
            if self.dry_run:
                report.estimated_usd = self.budget.spent_usd
            else:
                report.spent_usd, report.uncertain_usd = self.budget.spent_usd, self.budget.uncertain_usd
            if kind in ("refused", "refused_before", "failed") and len(report.failures) < MAX_LISTED:
                report.failures.append(Failure(work.item.where, work.item.prompt[:200], reason, kind))
        counter = {"generated": "prewarm.generated", "cached": "prewarm.skipped", "semantic": "prewarm.skipped",
                   "by_others": "prewarm.skipped", "refused": "prewarm.failed", "failed": "prewarm.failed",
                   "refused_before": "prewarm.failed"}.get(kind)
        if counter is not None and not self.dry_run:
            deltas: dict[str, float] = {counter: 1}
            if kind == "generated":
                deltas["prewarm.spent_usd"] = work.price or 0.0
            self.cache.stats_counters.add(deltas)
        self._event(kind, work.item, reason)

    def _event(self, kind: str, item: PrewarmItem | None, detail: str) -> None:
        try:
            self.progress.event(kind, item, detail, self.report)
        except Exception as exc:  # an onlooker's bug must not cost the run
            log.debug("prewarm: progress: %r", exc)

    def _publish(self, claims: Claims) -> None:
        """Figures for ``imgcache stats``: the counters (flushed now) and this run's summary
        in the shared list of recent runs."""
        if claims.errors:
            log.warning("prewarm: the shared claims failed %d times; a prompt may have been "
                        "generated twice", claims.errors)
        publish_run(self.cache, self.report)
        self.cache.flush_stats()


class _Interrupts:
    count = 0


@contextlib.contextmanager
def _counted_interrupts() -> Iterator[_Interrupts]:
    """While the block runs (in the main thread), SIGINT and SIGTERM, where their handler is
    Python's ``default_int_handler`` (raise KeyboardInterrupt), are counted instead; the
    handlers are put back after. Elsewhere (another thread, other handlers) nothing changes."""
    interrupts = _Interrupts()
    replaced: dict[int, Any] = {}

    def count(signum: int, frame: Any) -> None:
        interrupts.count += 1  # nothing that takes a lock: this runs between any two bytecodes

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is signal.default_int_handler:
                replaced[signum] = signal.signal(signum, count)
    try:
        yield interrupts
    finally:
        for signum, handler in replaced.items():
            signal.signal(signum, handler)
