"""The ``imgcache`` console script.

    imgcache stats [--json] [--namespace NS]   figures of every process sharing the cache
    imgcache demo [--requests N] [--latency S]  replay a request stream against a local stand-in
    imgcache inspect PROMPT [-p NAME=VALUE]     why a prompt would (not) match: key, entry, candidates

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
            "--json", help="Print the figures as JSON (the dict of cache.stats(shared=True))."
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", help="Namespace to show (default: IMGCACHE_NAMESPACE or 'default')."
        ),
    ] = None,
) -> None:
    """Show what the cache did, summed over every process that shares it.

    Configuration is read from the IMGCACHE_* environment variables, as Cache.from_env() does.
    """
    from .cache import Cache
    from .errors import TierError

    overrides = {"namespace": namespace} if namespace else {}
    try:
        cache = Cache.from_env(**overrides)
        try:
            figures = cache.stats(shared=True)
        finally:
            cache.close()
    # ConfigError is a ValueError; so is what a driver raises for a value it refuses on
    # first use (a Redis URL without its scheme).
    except ValueError as exc:
        _fail(str(exc), CONFIG_ERROR)
    except TierError as exc:
        _fail(f"cannot read the shared counters: {exc}", FAILURE)
    if as_json:
        typer.echo(json.dumps(figures, indent=2, sort_keys=True))
        return
    from rich.console import Console

    _print_stats(Console(), cache, figures)


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


def _print_stats(console: Console, cache: Cache, figures: dict[str, Any]) -> None:
    from rich.table import Table

    requests, hits = figures["requests"], figures["hits"]
    by_tier, by_match = figures["by_tier"], figures["by_match"]
    tier_errors = figures.get("tier_errors", {})

    table = Table(
        title=f"imgcache stats - namespace {figures['namespace']!r}",
        show_header=False,
        title_justify="left",
    )
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
    for tier in figures["tiers"]:
        table.add_row(f"{tier} errors", f"{tier_errors.get(tier, 0):,}", "")
    console.print(table)
    _print_recent_semantic_hits(console, figures.get("recent_semantic_hits") or [])

    config = Table(
        title="configuration (from IMGCACHE_* variables)", show_header=False, title_justify="left"
    )
    config.add_column("setting", style="bold")
    config.add_column("value")
    config.add_row("namespace", figures["namespace"])
    for tier, state in figures["tiers"].items():
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
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes sharing the port.")] = 1,
    graceful_timeout: Annotated[float, typer.Option("--graceful-timeout", min=1.0, help="Seconds requests in "
                                                    "flight get to finish on SIGTERM.")] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run an OpenAI-compatible caching proxy: point any client's base URL at it.

    Example: OPENAI_BASE_URL=http://localhost:8787/v1 node app.js

    Image generations and edits, and chat completions and responses with images, are cached.

    Everything else is forwarded unchanged. Cache configuration: the IMGCACHE_* variables.

    Needs the proxy extra: pip install "imgcache\\[proxy]".
    """
    from ._config import parse_bytes
    from .errors import ConfigError

    try:
        from .proxy.config import ProxyConfig
        from .proxy.server import serve as run_proxy

        config = ProxyConfig(
            upstream=upstream, namespace_mode=namespace_mode, namespace=namespace,
            namespace_header=namespace_header, allow_namespace_header=tuple(allow_namespace_header or ()),
            max_body_bytes=parse_bytes(max_body, "--max-body"), upstream_timeout=upstream_timeout,
            cache_text_only=cache_text_only, public_url=public_url)
        run_proxy(config, host=host, port=port, workers=workers, log_level=log_level,
                  graceful_timeout=graceful_timeout)
    except ImportError as exc:
        _fail(f"imgcache serve needs pip install 'imgcache[proxy]' ({exc})", CONFIG_ERROR)
    except ConfigError as exc:
        _fail(str(exc), CONFIG_ERROR)


def main() -> None:
    """Entry point of the ``imgcache`` console script."""
    app()


if __name__ == "__main__":
    main()
