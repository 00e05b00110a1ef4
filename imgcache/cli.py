"""The ``imgcache`` console script.

    imgcache stats [--json] [--namespace NS]   figures of every namespace and process sharing the cache
    imgcache prune [--max-size SIZE] [--dry-run] remove expired and least recently used files
    imgcache demo [--requests N] [--latency S]  replay a request stream against a local stand-in
    imgcache inspect PROMPT [-p NAME=VALUE]     why a prompt would (not) match: key, entry, candidates
    imgcache prewarm PROMPTS --model M [...]    generate ahead of demand, within rate limits and a budget
    imgcache serve [--port N] [--upstream URL]  an OpenAI-compatible caching proxy for any client

This module imports only typer at load time: the cache, rich's renderables, openai and the
storage drivers are imported inside the commands that use them, so ``imgcache --help`` and
``imgcache stats`` start fast (and never load ML libraries).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from .cache import Cache

CONFIG_ERROR = 2
"""Exit code for a configuration value the cache cannot use (like a usage error)."""
FAILURE = 1
PARTIAL = 3
"""Exit code of a prewarm run that finished with prompts left uncached (see its summary), and of
a prune that could not bring the directory within --max-size (blobs kept for their grace)."""
INTERRUPTED = 130

app = typer.Typer(
    name="imgcache",
    help="Content-addressed cache for image-generation API calls.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"imgcache: error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
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
    from .cache import Cache
    from .errors import TierError, TierUnavailable
    from .prewarm.job import recent_runs
    from .stats import NAMESPACE_LIMIT, add_up, shared_namespaces

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
                sink = cache.store.shared_store()
                found: Any = ([], False) if sink is None else cache.store.guarded(
                    sink, shared_namespaces, sink, NAMESPACE_LIMIT)
                if not isinstance(found, tuple):
                    raise TierUnavailable(sink.name, "the shared namespaces could not be listed")
                names, truncated = found
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


@app.command()
def prune(
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Then evict the least recently used entries until entries and "
                     "blobs fit in this size (5GB, 500MiB)."),
    ] = None,
    grace: Annotated[
        str, typer.Option("--grace", help="Keep blobs no entry references yet (writes in progress) and "
                                 "half-written files younger than this (1h, 90s).")
    ] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; remove nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Remove what the local cache directory no longer needs: expired or damaged entries, blobs
    no entry uses, and with --max-size the least recently used entries (every namespace).

    The directory is IMGCACHE_DIR, or the user's cache directory when neither Redis nor S3 is
    configured. Safe while other processes use the cache: what they miss they refetch.

    An evicted or expired entry's blobs go with it; blobs no entry references yet (a write in
    progress) are kept while younger than --grace. Exit status 3 when those alone keep the
    directory over --max-size (it says by how much), 0 otherwise.
    """
    from ._config import parse_bytes, parse_duration
    from .cache import Cache
    from .errors import TierError
    from .store.disk import DiskTier

    try:
        limit = parse_bytes(max_size, "--max-size") if max_size is not None else None
        keep_for = parse_duration(grace, "--grace") or 0.0
        cache = Cache.from_env()
        cache.close()
    except ValueError as exc:
        _fail(str(exc), CONFIG_ERROR)
    if cache.directory is None:
        _fail("no local cache directory: set IMGCACHE_DIR (Redis and S3 expire entries themselves)",
              CONFIG_ERROR)
    try:
        disk = DiskTier(cache.directory, file_mode=cache.file_mode)
        report = disk.prune(max_bytes=limit, grace=keep_for, dry_run=dry_run)
    except TierError as exc:
        _fail(str(exc), FAILURE)
    if as_json:
        typer.echo(json.dumps({"directory": str(cache.directory), "dry_run": dry_run, "max_bytes": limit,
                               **report.as_dict()}, indent=2, sort_keys=True))
    else:
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"{cache.directory}: {verb} {report.expired} expired, {report.invalid} damaged and "
                   f"{report.evicted} evicted entries, {report.orphans} unused blobs, {report.temporaries} "
                   f"half-written files ({_size(report.freed_bytes)}); kept {report.entries} entries and "
                   f"{report.blobs} blobs ({_size(report.kept_bytes)})")
        if report.over_limit_bytes:
            typer.echo(f"still over --max-size {max_size} by {_size(report.over_limit_bytes)}"
                       + (" (dry run)" if dry_run else "")
                       + f": {report.pending_blobs} blob{'' if report.pending_blobs == 1 else 's'} "
                       f"({_size(report.pending_bytes)}) that no entry references yet, younger than --grace "
                       f"{grace} (writes in progress), kept; "
                       "prune again once they are older, or with a shorter --grace")
    if report.over_limit_bytes:
        raise typer.Exit(PARTIAL)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


@app.command()
def demo(
    requests: Annotated[
        int, typer.Option("--requests", "-n", min=1, help="Requests to replay.")
    ] = 200,
    latency: Annotated[
        float, typer.Option("--latency", min=0.0, help="Seconds the stand-in API takes per call.")
    ] = 0.2,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Cache directory to use and keep (default: a temporary one)."),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Call the real OpenAI API (3 prompts, dall-e-2 256x256).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before --live spends money.")
    ] = False,
) -> None:
    """Replay a realistic stream of image requests through the cache, with no servers needed."""
    from rich.console import Console

    from . import demo as demo_module
    from .errors import ImgcacheError

    console = Console()
    if live:
        if not os.environ.get("OPENAI_API_KEY"):
            _fail("--live needs OPENAI_API_KEY in the environment", CONFIG_ERROR)
        if not yes:
            typer.confirm(
                f"--live makes up to {demo_module.LIVE_PROMPTS} real dall-e-2 256x256 calls "
                f"(about ${demo_module.live_cost_ceiling():.2f}). Go on?",
                abort=True,
            )
    try:
        demo_module.run_demo(requests, latency, directory, live, console)
    except ImportError as exc:
        if exc.name != "openai":
            raise
        _fail("the demo needs the OpenAI SDK: pip install 'imgcache[openai]'", FAILURE)
    except ImgcacheError as exc:
        _fail(str(exc), CONFIG_ERROR if isinstance(exc, ValueError) else FAILURE)


@app.command()
def inspect(
    prompt: Annotated[str, typer.Argument(help="The prompt to look up.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="An output-changing parameter, NAME=VALUE (repeatable)."),
    ] = None,
    operation: Annotated[
        str,
        typer.Option("--op", help="What answers the prompt: openai.images.generate, or the name of "
                                  "a decorated function (module.qualname, or its name= option)."),
    ] = "openai.images.generate",
    namespace: Annotated[str | None, typer.Option("--namespace")] = None,
) -> None:
    """Show how a prompt would be answered: its exact key and entry, and the semantic
    candidates with their similarity and the verifier's decision on each."""
    from rich.console import Console
    from rich.table import Table

    from .adapters.openai import GENERATE_OPERATION, image_params
    from .cache import Cache
    from .errors import ImgcacheError
    from .match.verify import content_text
    from .request import Request

    params: dict[str, Any] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"--param {item!r} is not NAME=VALUE", CONFIG_ERROR)
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    overrides = {"namespace": namespace} if namespace else {}
    console = Console()
    try:
        cache = Cache.from_env(**overrides)
        if operation == GENERATE_OPERATION:
            params = image_params(params)
        request = Request.build("generation", operation, prompt, params)
        hit = cache.lookup(request)
        matcher = cache.semantic
        proposals = matcher.propose(request) if matcher is not None else []
        candidates = [(p, cache.store.get(cache.namespace, p.candidate.key) is not None) for p in proposals]
        content = content_text(request.prompt)
        cache.close()
    except ImgcacheError as exc:
        _fail(str(exc), CONFIG_ERROR if isinstance(exc, ValueError) else FAILURE)
    console.print(f"[bold]prompt[/bold]      {request.prompt!r}")
    console.print(f"[bold]content[/bold]     {content!r}  (what the embedder sees)")
    console.print(f"[bold]scope[/bold]       {operation} {json.dumps(request.params, sort_keys=True)}")
    console.print(f"[bold]exact key[/bold]   {request.key}")
    if hit is None:
        console.print("[bold]exact entry[/bold] none")
    else:
        manifest = hit.manifest
        matched = manifest.get("matched")
        how = (f"a semantic alias of {matched['prompt']!r} (similarity {matched['similarity']}, "
               f"{matched['verdict']})" if matched else "made for this request")
        console.print(f"[bold]exact entry[/bold] in {hit.tier}: {how}")
    table = Table(title="semantic candidates", title_justify="left")
    for column in ("similarity", "verifier", "stored prompt", "reason", "entry"):
        table.add_column(column)
    for proposal, present in candidates:
        verdict = proposal.verdict
        table.add_row(f"{proposal.candidate.similarity:.3f}",
                      "[green]same[/green]" if verdict.same else "[red]different[/red]",
                      proposal.candidate.prompt[:80], verdict.reason[:80],
                      "present" if present else "gone")
    console.print(table if candidates else "semantic candidates: none above the similarity floor")


def _params(items: list[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` options; a VALUE that parses as JSON is taken as JSON (``n=2``)."""
    params: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            _fail(f"--param {item!r} is not NAME=VALUE", CONFIG_ERROR)
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


@app.command()
def prewarm(
    source: Annotated[
        str | None,
        typer.Argument(help="Prompts: a text file (one a line), .jsonl (one object a line, with "
                            "its own parameters), .csv (a 'prompt' column), or - for standard input.",
                       show_default=False),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model of prompts that do not name "
                                              "one: dall-e-2, dall-e-3, gpt-image-1, gpt-image-1-mini.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="e.g. 1024x1024.")] = None,
    quality: Annotated[str | None, typer.Option("--quality", help="e.g. standard, hd, low, high.")] = None,
    style: Annotated[str | None, typer.Option("--style", help="dall-e-3: vivid or natural.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Another images.generate parameter, NAME=VALUE (repeatable)."),
    ] = None,
    input_format: Annotated[str, typer.Option("--format", help="auto (by suffix), text, jsonl or csv.")] = "auto",
    from_history: Annotated[
        int | None,
        typer.Option("--from-history", min=1, help="Warm the N prompts that missed most often and are "
                                                   "not cached now, from the cache's request log."),
    ] = None,
    since: Annotated[str, typer.Option("--since", help="With --from-history: how far back (12h, 7d).")] = "7d",
    rpm: Annotated[float | None, typer.Option("--rpm", min=0.001, help="Requests per minute per model, "
                                              "shared by every worker on the same Redis.")] = None,
    ipm: Annotated[float | None, typer.Option("--ipm", min=0.001, help="Images per minute per model.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=256,
                                             help="Calls in flight at once (this worker).")] = 4,
    max_usd: Annotated[float | None, typer.Option("--max-usd", min=0.0, help="Never spend more than this "
                                                  "(this worker), at list price.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Look everything up, call nothing: print how "
                                          "many calls and dollars the run would take.")] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries of a 5xx or timed-out call.")] = 3,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds one call may take.")] = 300.0,
    lease: Annotated[float, typer.Option("--lease", min=0.1, help="Seconds before a dead worker's "
                                         "prompts go to the others (with Redis).")] = 30.0,
    retry_refused: Annotated[bool, typer.Option("--retry-refused", help="Ask again for prompts the API "
                                                "refused in the last day.")] = False,
    semantic: Annotated[bool, typer.Option("--semantic/--no-semantic", help="Also skip prompts a verified "
                                           "semantic match answers (loads the embedding model).")] = True,
    namespace: Annotated[str | None, typer.Option("--namespace")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Generate images ahead of demand, within rate limits and a budget.

    Every prompt not cached yet is generated once. Workers sharing a Redis (or a directory)
    split the prompts between them; running again after an interruption skips what is done.

    Cache configuration comes from the IMGCACHE_* variables; the OpenAI client from
    OPENAI_API_KEY and OPENAI_BASE_URL. Exit status: 0 every prompt is cached, 3 some are not
    (refused, failed, over budget, bad lines), 1 the API stopped the run (key, quota),
    2 bad options, 130 interrupted.
    """
    import signal
    import sys

    from rich.console import Console

    from ._config import parse_duration
    from .cache import Cache
    from .errors import ImgcacheError
    from .prewarm.history import from_history as history_items
    from .prewarm.progress import PlainProgress, RichProgress, print_summary
    from .prewarm.run import prewarm as run_prewarm

    if source is not None and from_history is not None:
        _fail("give a prompts file or --from-history, not both", CONFIG_ERROR)
    if source is None and from_history is None:
        if sys.stdin.isatty():
            _fail("give a prompts file (- for standard input) or --from-history N", CONFIG_ERROR)
        source = "-"
    params = {k: v for k, v in (("model", model), ("size", size), ("quality", quality), ("style", style))
              if v is not None}
    params.update(_params(param))
    # The cache's flight lock of a call in flight dies with its worker too: no later than the lease.
    overrides: dict[str, Any] = {"lock_timeout": min(lease, 10.0)}
    if namespace:
        overrides["namespace"] = namespace
    if not semantic:
        overrides["semantic"] = False
    err = Console(stderr=True)
    progress = RichProgress(err) if err.is_terminal and not err.is_dumb_terminal else PlainProgress(sys.stderr)
    # Ctrl-C (SIGINT) and SIGTERM stop the run, both installed explicitly: a process started in
    # the background by a non-interactive shell (`script &`, cron, some CI runners) inherits
    # SIGINT ignored, and Python then leaves it ignored instead of raising KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        cache = Cache.from_env(**overrides)
        try:
            if from_history is not None:
                window = parse_duration(since, "--since")
                items: Any = history_items(cache, from_history, since=window, matching=params)
                if not items:
                    err.print("prewarm: the request log has no uncached prompts to warm"
                              + (f" in the last {since}" if window else ""))
            else:
                items = source
            report = run_prewarm(items, cache=cache, format=input_format, params=None if from_history else params,
                                 rpm=rpm, ipm=ipm, concurrency=concurrency,
                                 max_usd=max_usd, dry_run=dry_run, retries=retries, timeout=timeout,
                                 lease=lease, retry_refused=retry_refused, semantic=semantic,
                                 progress=progress)
        except BaseException:
            cache.close()
            raise
    except KeyboardInterrupt:
        typer.echo("imgcache: prewarm: interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None
    except ImgcacheError as exc:
        _fail(str(exc), CONFIG_ERROR if isinstance(exc, ValueError) else FAILURE)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        print_summary(Console(), report)
    if report.abandoned:  # calls still in flight in worker threads: do not wait for them
        cache.flush_stats()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    cache.close()
    if report.fatal:
        raise typer.Exit(FAILURE)
    if report.interrupted:
        raise typer.Exit(INTERRUPTED)
    if not report.complete:
        raise typer.Exit(PARTIAL)


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
        limit = cache.store.memory.max_bytes if cache.store.memory is not None else None
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


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8787,
    upstream: Annotated[str, typer.Option("--upstream", help="The API to forward to: <proxy>/v1/X goes to "
                                          "<upstream>/X.")] = "https://api.openai.com/v1",
    namespace_mode: Annotated[str, typer.Option(
        "--namespace-mode", help="Who shares cached entries: per-key (one namespace per API key, named by a "
                                 "hash of it), shared (every caller), header (the --namespace-header value, "
                                 "set by a gateway you trust).")] = "per-key",
    namespace: Annotated[str | None, typer.Option(
        "--namespace", help="The shared namespace, the prefix of per-key ones, or (header mode) the namespace "
                            "of requests without the header (default: IMGCACHE_NAMESPACE or 'default'; in "
                            "header mode, none: they pass through uncached).", show_default=False)] = None,
    namespace_header: Annotated[str, typer.Option("--namespace-header")] = "x-imgcache-namespace",
    allow_namespace_header: Annotated[list[str] | None, typer.Option(
        "--allow-namespace-header", help="A namespace (glob, '*' for any) a caller may pick with the namespace "
                                         "header; repeatable. Without it the header is refused (403).")] = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body (413 beyond).")] = "64MiB",
    upstream_timeout: Annotated[float, typer.Option("--upstream-timeout", min=0.1,
                                                    help="Seconds to wait for the upstream's answer.")] = 600.0,
    cache_text_only: Annotated[bool, typer.Option("--cache-text-only", help="Also cache chat completions and "
                                                  "responses without images (exact match).")] = False,
    public_url: Annotated[str | None, typer.Option("--public-url", help="The proxy's URL as callers reach it, "
                                                   "for cached images' url (default: each request's Host).",
                                                   show_default=False)] = None,
    fetch_remote: Annotated[bool, typer.Option("--fetch-remote/--no-fetch-remote", help="Fetch callers' http(s) "
                                               "image URLs to key them by content (public addresses only, plus "
                                               "--fetch-allow). Off: keyed by URL, forwarded as they came.")] = False,
    fetch_allow: Annotated[list[str] | None, typer.Option(
        "--fetch-allow", help="A network (10.0.0.0/8) or host (images.corp, *.corp) that fetches may reach "
                              "besides public addresses; repeatable.")] = None,
    fetch_timeout: Annotated[float, typer.Option("--fetch-timeout", min=0.1, help="Seconds a fetch may take "
                                                 "in all.")] = 10.0,
    max_header: Annotated[str, typer.Option("--max-header", help="Largest request line and headers "
                                            "together (431 beyond).")] = "64KiB",
    max_clients: Annotated[int, typer.Option("--max-clients", min=1, help="Connections and requests at once "
                                             "(503 beyond).")] = 1024,
    body_timeout: Annotated[float, typer.Option("--body-timeout", min=0.1, help="Seconds a request body may "
                                                "take to arrive (408 beyond).")] = 120.0,
    file_url_ttl: Annotated[str, typer.Option("--file-url-ttl", help="How long a cached image's URL is served "
                                              "(at most its entry's lifetime).")] = "1h",
    semantic: Annotated[bool, typer.Option("--semantic/--no-semantic", help="Match generation prompts "
                                           "semantically on an exact miss (an embedding per miss).")] = True,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes sharing the port.")] = 1,
    graceful_timeout: Annotated[float, typer.Option("--graceful-timeout", min=1.0, help="Seconds requests in "
                                                    "flight get to finish on SIGTERM.")] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run an OpenAI-compatible caching proxy: point any client's base URL at it.

    Example: OPENAI_BASE_URL=http://localhost:8787/v1 node app.js

    Image generations and edits, and chat completions and responses with images, are cached.

    Everything else is forwarded unchanged. Cache configuration: the IMGCACHE_* variables
    (IMGCACHE_PROXY_SECRET: the secret that seals cached images' URLs).

    Needs the proxy extra: pip install "imgcache\\[proxy]".
    """
    from ._config import parse_bytes, parse_duration
    from .errors import ConfigError

    try:
        from .proxy.config import ProxyConfig
        from .proxy.server import serve as run_proxy

        config = ProxyConfig(
            upstream=upstream, namespace_mode=namespace_mode, namespace=namespace,
            namespace_header=namespace_header, allow_namespace_header=tuple(allow_namespace_header or ()),
            max_body_bytes=parse_bytes(max_body, "--max-body"), upstream_timeout=upstream_timeout,
            cache_text_only=cache_text_only, public_url=public_url, fetch_remote=fetch_remote,
            fetch_allow=tuple(fetch_allow or ()), fetch_timeout=fetch_timeout,
            max_header_bytes=parse_bytes(max_header, "--max-header"), max_clients=max_clients,
            body_timeout=body_timeout, file_url_ttl=parse_duration(file_url_ttl, "--file-url-ttl") or 0.0)
        run_proxy(config, host=host, port=port, workers=workers, log_level=log_level,
                  graceful_timeout=graceful_timeout, cache_options={} if semantic else {"semantic": False})
    except ImportError as exc:
        _fail(f"imgcache serve needs pip install 'imgcache[proxy]' ({exc})", CONFIG_ERROR)
    except ConfigError as exc:
        _fail(str(exc), CONFIG_ERROR)


def main() -> None:
    """Entry point of the ``imgcache`` console script."""
    app()


if __name__ == "__main__":
    main()
