"""``imgcache prewarm``: generate images ahead of demand, within rate limits and a budget."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from ._common import CONFIG_ERROR, FAILURE, INTERRUPTED, PARTIAL, _fail


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
                                                  "on the job (every worker of it together, through "
                                                  "Redis or the directory), at list price.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="The job's name: workers with the same name share "
                                            "--max-usd (default: one from the prompts and parameters).",
                                            show_default=False)] = None,
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

    from .._config import parse_duration
    from ..cache import Cache
    from ..errors import ImgcacheError
    from ..prewarm.history import from_history as history_items
    from ..prewarm.progress import PlainProgress, RichProgress, print_summary
    from ..prewarm.run import prewarm as run_prewarm

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
                                 progress=progress, job=job)
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
