"""``imgcache serve``: the OpenAI-compatible caching proxy."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import CONFIG_ERROR, _fail


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
    budget: Annotated[str | None, typer.Option(
        "--budget", help="What misses may spend upstream: 50/day, 2/hour, 300/month or 20 (in all); over it a "
                         "miss is answered 429 budget_exceeded with Retry-After, hits as usual (default: "
                         "IMGCACHE_BUDGET, none).", show_default=False)] = None,
    budget_scope: Annotated[str | None, typer.Option(
        "--budget-scope", help="namespace (each namespace its own budget) or shared (one for all).",
        show_default=False)] = None,
    budget_warn_at: Annotated[float | None, typer.Option(
        "--budget-warn-at", min=0.01, max=1.0, help="The fraction of the budget at which a warning is logged "
                                                    "and sent (default 0.8).", show_default=False)] = None,
    alert_webhook: Annotated[str | None, typer.Option(
        "--alert-webhook", help="An http(s) URL that gets a JSON POST for each budget warning.",
        show_default=False)] = None,
    rpm: Annotated[list[str] | None, typer.Option(
        "--rpm", help="Requests per minute a model may get, as model=rate (dall-e-3=5; * for any model); "
                      "repeatable. A miss waits its turn instead of meeting a 429.", show_default=False)] = None,
    ipm: Annotated[list[str] | None, typer.Option(
        "--ipm", help="Images per minute a model may make, as model=rate (gpt-image-1=20); repeatable.",
        show_default=False)] = None,
    queue_timeout: Annotated[str | None, typer.Option(
        "--queue-timeout", help="How long a miss may wait for its turn (beyond: 429 rate_limit_exceeded with "
                                "Retry-After); default 30s.", show_default=False)] = None,
) -> None:
    """Run an OpenAI-compatible caching proxy: point any client's base URL at it.

    Example: OPENAI_BASE_URL=http://localhost:8787/v1 node app.js

    Image generations and edits, and chat completions and responses with images, are cached.

    Everything else is forwarded unchanged. Cache configuration: the IMGCACHE_* variables
    (IMGCACHE_PROXY_SECRET: the secret that seals cached images' URLs).

    Needs the proxy extra: pip install "imgcache\\[proxy]".
    """
    import os

    from .._config import cache_config_from_env, parse_bytes, parse_duration
    from ..errors import ConfigError

    try:
        for name, value in (("IMGCACHE_BUDGET", budget), ("IMGCACHE_BUDGET_SCOPE", budget_scope),
                            ("IMGCACHE_BUDGET_WARN_AT", budget_warn_at), ("IMGCACHE_BUDGET_WEBHOOK", alert_webhook),
                            ("IMGCACHE_RPM", ",".join(rpm) if rpm else None),
                            ("IMGCACHE_IPM", ",".join(ipm) if ipm else None), ("IMGCACHE_QUEUE_TIMEOUT", queue_timeout)):
            if value is not None:  # the workers read them: every worker draws on one budget and queue
                os.environ[name] = str(value)
        cache_config_from_env(os.environ)  # a malformed budget or limit fails here, naming the value
        from ..proxy.config import ProxyConfig
        from ..proxy.server import serve as run_proxy

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
