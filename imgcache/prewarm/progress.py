"""How ``imgcache prewarm`` shows a run: a live bar on a terminal, plain lines elsewhere
(cron mail, CI logs, ``kubectl logs``), and a summary at the end. Rich is imported here
only, on use."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from .inputs import PrewarmItem
from .job import PrewarmReport

if TYPE_CHECKING:
    from rich.console import Console

_LOUD = ("refused", "failed", "fatal", "invalid", "stopping")
SHOWN = 20
"""Problems and failures listed in the summary (the report keeps more)."""


def _figures(report: PrewarmReport) -> list[str]:
    """The live figures: done is the bar's (or the line's) own."""
    cached = report.cached + report.semantic + report.by_others
    if report.dry_run:
        return [f"would generate {report.would_generate}", f"cached {cached}",
                f"over budget {report.over_budget}", f"${report.estimated_usd:,.2f} estimated"]
    failed = report.refused + report.refused_before + report.failed
    return [f"generated {report.generated}", f"cached {cached}", f"failed {failed}",
            f"${report.spent_usd:,.2f} spent"]


def _eta(done: int, total: int, elapsed: float) -> str:
    if done <= 0 or done >= total or elapsed <= 0:
        return "-"
    return _duration((total - done) * elapsed / done)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class PlainProgress:
    """Lines for a log: every failure and problem as it happens, and a progress line every
    ``interval`` seconds (and at each 10% step)."""

    def __init__(self, out: TextIO | None = None, *, interval: float = 10.0) -> None:
        self.out = out or sys.stderr
        self.interval = interval
        self._total = 0
        self._started = time.monotonic()
        self._last = 0.0
        self._step = 0
        self._printed = ""
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        with self._lock:
            if text != self._printed:  # the closing line often repeats the last step's
                print(f"prewarm: {text}", file=self.out, flush=True)
                self._printed = text

    def start(self, report: PrewarmReport, total: int) -> None:
        self._total = total
        self._started = self._last = time.monotonic()
        skipped = f", {report.duplicates} duplicates" if report.duplicates else ""
        bad = f", {report.invalid} bad lines" if report.invalid else ""
        self._print(f"{total} prompts to look at ({report.lines} read{skipped}{bad})"
                    + (" - dry run, nothing will be called" if report.dry_run else ""))

    def event(self, kind: str, item: PrewarmItem | None, detail: str, report: PrewarmReport) -> None:
        where = f"{item.where}: " if item is not None and item.where else ""
        if kind in ("refused", "failed", "fatal"):
            self._print(f"{where}{kind}: {detail}")
        elif kind == "rate_limited":
            self._print(f"{where}{detail}")
        elif kind in ("invalid", "stopping", "retry"):  # these details say where themselves
            self._print(detail)
        now = time.monotonic()
        step = 10 * report.done // self._total if self._total else 0
        if now - self._last >= self.interval or step > self._step:
            self._last, self._step = now, step
            self._print(self.line(report))

    def line(self, report: PrewarmReport) -> str:
        elapsed = time.monotonic() - self._started
        return ", ".join([f"{report.done}/{self._total} done", *_figures(report),
                          f"ETA {_eta(report.done, self._total, elapsed)}"])

    def finish(self, report: PrewarmReport) -> None:
        self._print(self.line(report))


class RichProgress:
    """A live bar: done, cached (skipped), failed, spent, ETA; failures printed above it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self._bar = Progress(SpinnerColumn(), TextColumn("[bold]prewarm"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[figures]}"), TimeElapsedColumn(),
                             TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        self._task: Any = None

    @staticmethod
    def _figures(report: PrewarmReport) -> str:
        return " · ".join(_figures(report))

    def start(self, report: PrewarmReport, total: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("prewarm", total=total, figures=self._figures(report))

    def event(self, kind: str, item: PrewarmItem | None, detail: str, report: PrewarmReport) -> None:
        if kind in _LOUD or kind == "rate_limited":
            from rich.markup import escape

            where = f"{item.where}: " if item is not None and item.where else ""
            colour = "yellow" if kind in ("rate_limited", "stopping") else "red"
            self._bar.console.print(f"[{colour}]{escape(where + detail)}[/{colour}]")
        if self._task is not None:
            self._bar.update(self._task, completed=report.done, figures=self._figures(report))

    def finish(self, report: PrewarmReport) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=report.done, figures=self._figures(report))
        self._bar.stop()


def print_summary(console: Console, report: PrewarmReport) -> None:
    """The end-of-run table, then the first problems and failures with their line numbers."""
    from rich.markup import escape
    from rich.table import Table

    title = "prewarm dry run" if report.dry_run else "prewarm"
    if report.abandoned:
        title += " (abandoned)"
    elif report.interrupted:
        title += " (interrupted)"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    table.add_row("input", f"{report.lines:,}", f"{report.invalid:,} bad, {report.duplicates:,} duplicates, "
                  f"{report.unique:,} unique prompts")
    table.add_row("already cached", f"{report.cached + report.semantic:,}",
                  f"{report.semantic:,} by a verified semantic match" if report.semantic else "")
    if report.by_others:
        table.add_row("by other workers", f"{report.by_others:,}", "generated elsewhere meanwhile")
    if report.dry_run:
        table.add_row("would generate", f"{report.would_generate:,}", f"${report.estimated_usd:,.2f} at list price")
        if report.would_generate and (report.rpm or report.ipm):
            minutes = max(report.would_generate / report.rpm if report.rpm else 0.0,
                          report.would_generate / report.ipm if report.ipm else 0.0)
            table.add_row("would take", _duration(60 * minutes), "at the configured rate limit")
    else:
        table.add_row("generated", f"{report.generated:,}", f"{report.images:,} images, {report.calls:,} calls")
        spent = f"${report.spent_usd:,.2f}"
        note = f"of ${report.max_usd:,.2f}" if report.max_usd is not None else "at list price"
        if report.uncertain_usd:
            note += f"; +${report.uncertain_usd:,.2f} for timed-out calls that may have been billed"
        table.add_row("spent", spent, note)
    for label, value, note in (
        ("refused", report.refused, "recorded: later runs skip them"),
        ("refused earlier", report.refused_before, "recorded by an earlier run or another worker"),
        ("failed", report.failed, "out of retries, or an error"),
        ("over budget", report.over_budget, "left for a later run"),
        ("not started", report.not_started, "the run stopped first"),
        ("taken over", report.taken_over, "left unfinished by another worker"),
    ):
        if value:
            table.add_row(label, f"{value:,}", note)
    if not report.dry_run:
        table.add_row("429s", f"{report.rate_limited:,}", f"{report.retries:,} retries in all")
        limit = report.ipm or report.rpm
        rate = f"{report.images_per_minute:,.1f} images/min"
        table.add_row("time", _duration(report.elapsed), rate + (f" (limit {limit:g}/min)" if limit else ""))
    if report.fatal:
        table.add_row("[red]stopped by[/red]", "", escape(report.fatal[:100]))
    console.print(table)
    problems = [p for p in report.problems if not p.blank]
    for heading, lines, count in (
        ("bad input", [str(p) for p in problems], report.invalid),
        ("not warmed", [f"{f.where or '-'}: {f.kind.replace('_', ' ')}: {f.reason}" for f in report.failures],
         report.refused + report.refused_before + report.failed),
    ):
        if not lines:
            continue
        console.print(f"[bold]{heading}[/bold] ({count:,}):")
        for line in lines[:SHOWN]:
            console.print(f"  {escape(line[:200])}", soft_wrap=True)
        if count > SHOWN:
            console.print(f"  ... and {count - SHOWN:,} more")
