"""``imgcache stats``: the figures of every namespace and process sharing the cache, as tables
(or JSON)."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from ._common import CONFIG_ERROR, FAILURE, _fail

if TYPE_CHECKING:
    from rich.console import Console

    from ..cache import Cache


def stats(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the figures as JSON: {\"namespaces\": {NS: figures}, \"total\": figures}; "
                           "with --namespace, that namespace's figures (the dict of cache.stats(shared=True))."
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", help="Show this namespace only (default: every namespace in the shared store, "
                                "the proxy's per-key ones included).", show_default=False
        ),
    ] = None,
) -> None:
    """Show what the cache did, summed over every process that shares it: a table per
    namespace found in the shared store (Redis, or the local directory) and their total.

    Configuration is read from the IMGCACHE_* environment variables, as Cache.from_env() does
    (IMGCACHE_NAMESPACE does not narrow the listing: --namespace does).
    """
    from ..cache import Cache
    from ..errors import TierError
    from ..prewarm.job import recent_runs
    from ..stats import NAMESPACE_LIMIT, add_up

    def figures_of(view: Cache) -> dict[str, Any]:
        figures = view.stats(shared=True)  # tier_errors holds every tier, 0 until it fails
        figures["recent_prewarm_runs"] = recent_runs(view)
        return figures

    overrides = {"namespace": namespace} if namespace else {}
    truncated = False
    try:
        cache = Cache.from_env(**overrides)
        try:
            if namespace:
                figures = figures_of(cache)
            else:
                names, truncated = cache.namespaces(NAMESPACE_LIMIT) or ([], False)
                per_namespace: dict[str, dict[str, Any]] = {}
                for name in names or [cache.namespace]:  # none yet: the configured one, all zeros
                    view = cache if name == cache.namespace else cache.for_namespace(name)
                    try:
                        per_namespace[name] = figures_of(view)
                    finally:
                        if view is not cache:
                            view.close()
                tiers = next(iter(per_namespace.values()))["tiers"]
                total = {**add_up(per_namespace.values()), "namespaces": len(per_namespace), "tiers": tiers}
        finally:
            cache.close()
    # ConfigError is a ValueError; so is what a driver raises for a value it refuses on
    # first use (a Redis URL without its scheme).
    except ValueError as exc:
        _fail(str(exc), CONFIG_ERROR)
    except TierError as exc:
        _fail(f"cannot read the shared counters: {exc}", FAILURE)
    if truncated:
        typer.echo(f"imgcache: stats: more than {NAMESPACE_LIMIT:,} namespaces; showing the first "
                   f"{NAMESPACE_LIMIT:,} by name (--namespace NS shows any one)", err=True)
    from rich.console import Console

    if namespace:
        if as_json:
            typer.echo(json.dumps(figures, indent=2, sort_keys=True))
            return
        _print_stats(Console(), cache, figures)
        return
    if as_json:
        typer.echo(json.dumps({"namespaces": per_namespace, "total": total, "truncated": truncated},
                              indent=2, sort_keys=True))
        return
    _print_all_stats(Console(), cache, per_namespace, total, truncated)


# -- the stats table ---------------------------------------------------------------------


def _print_recent_semantic_hits(console: Console, hits: list[dict[str, Any]], limit: int = 10) -> None:
    if not hits:
        return
    from rich.table import Table

    table = Table(title="recent semantic hits (newest first)", title_justify="left")
    for column in ("similarity", "query", "answered with the entry of", "verifier"):
        table.add_column(column)
    for hit in hits[:limit]:
        table.add_row(f"{hit.get('similarity', 0):.3f}", str(hit.get("query", ""))[:60],
                      str(hit.get("matched", ""))[:60], str(hit.get("verdict", ""))[:60])
    console.print(table)


def _print_recent_prewarm_runs(console: Console, runs: list[dict[str, Any]], limit: int = 5) -> None:
    if not runs:
        return
    import time

    from rich.table import Table

    table = Table(title="recent prewarm runs (newest first)", title_justify="left")
    for column in ("finished", "prompts", "generated", "cached", "failed", "spent", "images/min", "note"):
        table.add_column(column, justify="left" if column in ("finished", "note") else "right")
    for run in runs[:limit]:
        failed = sum(int(run.get(k, 0) or 0) for k in ("refused", "refused_before", "failed"))
        note = "stopped: " + str(run["fatal"])[:40] if run.get("fatal") else (
            "interrupted" if run.get("interrupted") else "")
        at = run.get("at")
        table.add_row(time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if isinstance(at, (int, float)) else "?",
                      f"{run.get('unique', 0):,}", f"{run.get('generated', 0):,}", f"{run.get('skipped', 0):,}",
                      f"{failed:,}", f"${float(run.get('spent_usd', 0) or 0):,.2f}",
                      f"{float(run.get('images_per_minute', 0) or 0):,.1f}", note)
    console.print(table)


FULL_TABLES = 10
"""Up to this many namespaces get a full table each; more get a row each in one table."""


def _stats_table(figures: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    requests, hits = figures["requests"], figures["hits"]
    by_tier, by_match = figures["by_tier"], figures["by_match"]
    tier_errors = figures.get("tier_errors", {})

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    table.add_row("requests", f"{requests:,}", "calls that went through the cache")
    table.add_row(
        "hit rate", f"{_rate(hits, requests)}", f"{hits:,} hits, {figures['misses']:,} misses"
    )
    table.add_section()
    for tier in ("memory", "disk", "redis", "s3"):
        table.add_row(f"hits from {tier}", f"{by_tier.get(tier, 0):,}", "")
    for match in ("exact", "semantic", "perceptual"):
        table.add_row(f"{match} matches", f"{by_match.get(match, 0):,}", "")
    table.add_row(
        "coalesced", f"{figures['coalesced']:,}", "identical concurrent calls answered by one"
    )
    table.add_section()
    table.add_row(
        "upstream calls", f"{figures['upstream_calls']:,}", f"{figures['upstream_errors']:,} raised"
    )
    table.add_row(
        "dollars saved", f"${figures['saved_usd']:,.2f}", "list price of the calls avoided"
    )
    table.add_row("dollars spent", f"${figures['spent_usd']:,.2f}", "list price of the calls made")
    table.add_row(
        "time saved", _duration(figures["saved_seconds"]), "upstream time the hits avoided"
    )
    budget = figures.get("budget")
    if budget and "limit_usd" in budget:
        used = budget["spent_usd"] + budget["held_usd"]
        per = f"/{budget['per']}" if budget["per"] else " in all"
        resets = f", resets {budget['resets_at']}" if budget["resets_at"] else ""
        table.add_row("budget", f"${used:,.2f} of ${budget['limit_usd']:,.2f}{per}",
                      f"{_rate(used, budget['limit_usd'])} used in {budget['window']}{resets} ({budget['scope']})")
        table.add_row("over budget", f"{budget['refused']:,}", f"misses refused; {budget['warnings']:,} warnings")
    rate = figures.get("rate")
    if rate:
        table.add_row("429s avoided", f"{int(rate.get('queued', 0)):,}",
                      f"misses that waited their turn ({_duration(rate.get('waited_seconds', 0))} in all)")
        table.add_row("429s", f"{int(rate.get('upstream_429', 0)):,}",
                      f"from the upstream; {int(rate.get('refused', 0)):,} refused beyond the queue timeout")
    from ..match.config import PERCEPTUAL_FEED

    for feed, snapshot in (figures.get("index_snapshots") or {}).items():
        state = "in use" if snapshot["usable"] else f"not usable ({snapshot['reported_bad']} reported bad)"
        what = f"{snapshot['scopes']:,} scopes" if feed != PERCEPTUAL_FEED else "every scope"  # one snapshot
        table.add_row(f"{feed} snapshot", what,
                      f"written {_duration(max(0.0, time.time() - snapshot['written_at']))} ago, {state}")
    table.add_section()
    table.add_row("stored", f"{figures['stored']:,}", "")
    table.add_row("uncacheable", f"{figures['uncacheable']:,}", "returned but not stored")
    table.add_row("unreadable images", f"{figures['unreadable_images']:,}", "vision calls passed through")
    table.add_row("bypassed", f"{figures['bypassed']:,}", "streaming or switched off")
    table.add_row("corrupt", f"{figures['corrupt']:,}", "entries that failed their digest")
    for tier, count in tier_errors.items():
        table.add_row(f"{tier} errors", f"{count:,}", "")
    prewarm = figures.get("prewarm")
    if prewarm:
        table.add_section()
        table.add_row("prewarm runs", f"{prewarm.get('runs', 0):,}", "imgcache prewarm, every worker")
        table.add_row("prewarmed", f"{prewarm.get('generated', 0):,}", "prompts generated ahead of demand")
        table.add_row("prewarm skipped", f"{prewarm.get('skipped', 0):,}", "cached already, or duplicates")
        table.add_row("prewarm failed", f"{prewarm.get('failed', 0):,}",
                      f"refused or out of retries; {prewarm.get('rate_limited', 0):,} 429s")
        table.add_row("prewarm spent", f"${prewarm.get('spent_usd', 0):,.2f}", "included in dollars spent")
    return table


def _print_namespace(console: Console, figures: dict[str, Any]) -> None:
    console.print(_stats_table(figures, f"imgcache stats - namespace {figures['namespace']!r}"))
    _print_recent_semantic_hits(console, figures.get("recent_semantic_hits") or [])
    _print_recent_prewarm_runs(console, figures.get("recent_prewarm_runs") or [])


def _print_stats(console: Console, cache: Cache, figures: dict[str, Any]) -> None:
    """One namespace (--namespace)."""
    _print_namespace(console, figures)
    _print_configuration(console, cache, figures["tiers"], figures["namespace"])


def _print_all_stats(console: Console, cache: Cache, per_namespace: dict[str, dict[str, Any]],
                     total: dict[str, Any], truncated: bool) -> None:
    """Every namespace of the shared store: a table each (a row each beyond FULL_TABLES), then
    their total."""
    if len(per_namespace) <= FULL_TABLES:
        for figures in per_namespace.values():
            _print_namespace(console, figures)
    else:
        from rich.table import Table

        table = Table(title=f"imgcache stats - {len(per_namespace):,} namespaces, busiest first "
                            "(--namespace NS for one in full)", title_justify="left")
        for column in ("namespace", "requests", "hit rate", "upstream calls", "dollars saved", "dollars spent",
                       "tier errors"):
            table.add_column(column, justify="left" if column == "namespace" else "right")
        for name, figures in sorted(per_namespace.items(), key=lambda item: (-item[1]["requests"], item[0])):
            table.add_row(name, f"{figures['requests']:,}", _rate(figures["hits"], figures["requests"]),
                          f"{figures['upstream_calls']:,}", f"${figures['saved_usd']:,.2f}",
                          f"${figures['spent_usd']:,.2f}", f"{sum(figures['tier_errors'].values()):,}")
        console.print(table)
    if len(per_namespace) > 1:
        more = " (the first shown: there are more)" if truncated else ""
        console.print(_stats_table(total, f"imgcache stats - total of {len(per_namespace):,} namespaces{more}"))
    shown = ", ".join(list(per_namespace)[:3]) + (", ..." if len(per_namespace) > 3 else "")
    _print_configuration(console, cache, total["tiers"], f"every namespace found: {shown}")


def _print_configuration(console: Console, cache: Cache, tiers: dict[str, str], namespace: str) -> None:
    from rich.table import Table

    config = Table(
        title="configuration (from IMGCACHE_* variables)", show_header=False, title_justify="left"
    )
    config.add_column("setting", style="bold")
    config.add_column("value")
    config.add_row("namespace", namespace)
    for tier, state in tiers.items():
        colour = "green" if state == "up" else "red"
        config.add_row(f"{tier} tier", f"[{colour}]{state}[/{colour}]  {_where(cache, tier)}")
    config.add_row("ttl", "none" if cache.ttl is None else _duration(cache.ttl))
    console.print(config)


def _where(cache: Cache, tier: str) -> str:
    env = os.environ
    if tier == "memory":
        limit = cache.memory_bytes
        return f"{limit / (1 << 20):,.0f} MiB, this process only" if limit else "this process only"
    if tier == "disk":
        return str(cache.directory)
    if tier == "redis":
        return _redact(env.get("IMGCACHE_REDIS_URL", ""))
    if tier == "s3":
        where = (
            f"s3://{env.get('IMGCACHE_S3_BUCKET', '')}/{env.get('IMGCACHE_S3_PREFIX', 'imgcache/')}"
        )
        endpoint = env.get("IMGCACHE_S3_ENDPOINT_URL")
        return f"{where} at {endpoint}" if endpoint else where
    return ""


def _redact(url: str) -> str:
    """A URL with its password replaced, for display."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _rate(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
