"""``imgcache demo``'s replay: the stream of demo_stream.py sent through a cache from a few
threads, so that identical requests in flight together show single-flight (one upstream call
for all), and what the cache did printed.

By default the requests go to :class:`~imgcache.testing.FakeOpenAI`, a local
stand-in for the API with a configurable latency; ``live=True`` uses the real API with a
few cheap dall-e-2 256x256 calls.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo_stream import (
    LIVE_PARAMS,
    LIVE_PROMPTS,
    NAMESPACE,
    PROMPTS,
    THREADS,
    DemoPrompt,
    request_stream,
)

if TYPE_CHECKING:
    from rich.console import Console


# -- timing the upstream ------------------------------------------------------------------


class _TimedImages:
    """``client.images`` whose ``generate`` calls are timed (the upstream the cache avoids)."""

    def __init__(self, images: Any, base_of: dict[str, str]) -> None:
        self._images = images
        self._base_of = base_of
        self._lock = threading.Lock()
        self.durations: list[float] = []
        self.called: Counter[str] = Counter()
        """Upstream calls per distinct prompt of the stream (the prompt each request spells)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._images, name)

    def generate(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._images.generate(**kwargs)
        finally:
            with self._lock:
                self.durations.append(time.perf_counter() - started)
                prompt = kwargs.get("prompt", "")
                self.called[self._base_of.get(prompt, prompt)] += 1


class _TimedClient:
    def __init__(self, client: Any, base_of: dict[str, str]) -> None:
        self._client = client
        self.images = _TimedImages(client.images, base_of)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@contextlib.contextmanager
def _upstream(live: bool, latency: float) -> Iterator[tuple[Any, str]]:
    """An OpenAI client and a description of what it talks to."""
    import openai

    if live:
        with openai.OpenAI() as client:
            yield client, "the real OpenAI API (billed)"
        return
    from ..testing import FakeOpenAI

    with (
        FakeOpenAI(latency=latency, image_size=(256, 256)) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key="demo", max_retries=0) as client,
    ):
        yield client, f"local stand-in for the OpenAI API, {latency:g} s per call"


@contextlib.contextmanager
def _directory(directory: Path | None) -> Iterator[tuple[Path, bool]]:
    if directory is not None:
        yield Path(directory), False
        return
    # ignore_cleanup_errors: a background writer of the closed cache may still be finishing.
    with tempfile.TemporaryDirectory(prefix="imgcache-demo-", ignore_cleanup_errors=True) as tmp:
        yield Path(tmp), True


# -- the run ------------------------------------------------------------------------------


def run_demo(
    requests: int, latency: float, directory: Path | None, live: bool, console: Console
) -> dict[str, Any]:
    """Replay ``requests`` image requests through a cache and print what the cache did.

    Returns the figures printed: ``requests``, ``upstream_calls``, ``avoided``, ``hits``,
    ``coalesced``, ``hit_rate``, ``wall_seconds`` (the replay), ``load_seconds`` (the embedding
    model's load before it: once per process), ``total_seconds`` (the whole run, both included),
    ``avg_upstream_seconds``, ``est_seconds_without_cache``, ``spent_usd``, ``saved_usd``,
    ``by_tier``, ``by_match``, ``errors``, ``distinct_prompts`` and ``repeated_calls`` (upstream
    calls beyond one per distinct prompt).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .._quiet import quiet_progress_bars
    from ..adapters.openai.client import wrap
    from ..cache import Cache

    begun = time.perf_counter()

    if live:  # a few cheap calls: the cache answers everything else
        prompts = tuple(DemoPrompt(p.text, LIVE_PARAMS) for p in PROMPTS[:LIVE_PROMPTS])
    else:
        prompts = PROMPTS
    stream = request_stream(requests, prompts)
    distinct = len({base for base, _ in stream})

    with _directory(directory) as (root, temporary), _upstream(live, latency) as (client, target):
        console.print(
            f"[bold]imgcache demo[/bold]: {requests} requests, {distinct} distinct "
            f"prompts spelled many ways and in other words, {THREADS} threads"
        )
        console.print(f"upstream: {target}")
        console.print(f"cache: {root}" + (" (temporary; --dir keeps one)" if temporary else ""))
        timed = _TimedClient(client, {kwargs["prompt"]: base for base, kwargs in stream})
        cache = Cache(namespace=NAMESPACE, directory=root)
        errors: list[BaseException] = []
        try:
            cached = wrap(timed, cache=cache)
            progress = Progress(
                TextColumn("replaying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )

            def call(kwargs: dict[str, Any]) -> None:
                try:
                    cached.images.generate(**kwargs)
                except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                    errors.append(exc)
                finally:
                    progress.advance(task)

            load = 0.0
            if cache.semantic is not None:  # load the model before the replay's clock starts
                loading = time.perf_counter()
                # The status line says what happens; third-party bars would land in the output.
                with console.status("loading the embedding model for semantic matching"), quiet_progress_bars(True):
                    try:
                        cache.semantic.embedder.embed(["warm up"])
                    except ImportError:
                        console.print("semantic matching off: pip install 'imgcache[semantic]'")
                load = time.perf_counter() - loading
            with progress:
                task = progress.add_task("replay", total=len(stream))
                started = time.perf_counter()
                with ThreadPoolExecutor(THREADS, thread_name_prefix="imgcache-demo") as pool:
                    list(pool.map(call, [kwargs for _, kwargs in stream]))
                wall = time.perf_counter() - started
            cache.flush()
            figures = cache.stats()
        finally:
            cache.close()

    total = time.perf_counter() - begun
    durations = timed.images.durations
    called = timed.images.called
    if durations:
        average = sum(durations) / len(durations)
    else:  # every answer came from a kept directory: use the upstream times stored with them
        average = figures["saved_seconds"] / figures["hits"] if figures["hits"] else 0.0
    result = {
        "requests": figures["requests"],
        "distinct_prompts": distinct,
        "upstream_calls": figures["upstream_calls"],
        "avoided": figures["requests"] - figures["upstream_calls"],
        "hits": figures["hits"],
        "coalesced": figures["coalesced"],
        "hit_rate": figures["hits"] / figures["requests"] if figures["requests"] else 0.0,
        "wall_seconds": round(wall, 3),
        "load_seconds": round(load, 3),
        "total_seconds": round(total, 3),
        "repeated_calls": sum(called.values()) - len(called),
        "avg_upstream_seconds": round(average, 4),
        "upstream_seconds": round(sum(durations), 3),
        "est_seconds_without_cache": round(requests * average, 3),
        "est_wall_seconds_without_cache": round(requests * average / THREADS, 3),
        "spent_usd": figures["spent_usd"],
        "saved_usd": figures["saved_usd"],
        "by_tier": figures["by_tier"],
        "by_match": figures["by_match"],
        "errors": len(errors),
        "live": live,
    }
    _print_summary(console, result, errors)
    return result


def _print_summary(console: Console, r: dict[str, Any], errors: list[BaseException]) -> None:
    from rich.table import Table

    from ..stats import MATCHES, TIERS

    table = Table(title="what the cache did", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    table.add_row("requests", f"{r['requests']:,}", f"{r['distinct_prompts']} distinct prompts")
    table.add_row(
        "upstream calls made",
        f"{r['upstream_calls']:,}",
        f"avg {r['avg_upstream_seconds']:.3f} s each",
    )
    if r["repeated_calls"]:
        table.add_row("  beyond one a prompt", f"{r['repeated_calls']:,}",
                      "a prompt in other words, asked while it was in flight")
    table.add_row(
        "upstream calls avoided",
        f"{r['avoided']:,}",
        f"{r['coalesced']} by joining an identical call in flight",
    )
    table.add_row("hit rate", f"{100 * r['hit_rate']:.1f}%", f"{r['hits']:,} hits")
    table.add_section()
    table.add_row("replay time", f"{r['wall_seconds']:.2f} s", f"{THREADS} threads, with the cache")
    table.add_row(
        "  without the cache",
        f"~{r['est_wall_seconds_without_cache']:.2f} s",
        f"same {THREADS} threads, every request upstream",
    )
    table.add_row(
        "upstream time",
        f"{r['upstream_seconds']:.2f} s",
        f"{r['upstream_calls']} calls, with the cache",
    )
    table.add_row(
        "  without the cache",
        f"~{r['est_seconds_without_cache']:.2f} s",
        f"{r['requests']} requests x {r['avg_upstream_seconds']:.3f} s",
    )
    if r["load_seconds"]:
        table.add_row("model load", f"{r['load_seconds']:.2f} s",
                      "embedding model for semantic matching: once per process, before the replay")
    table.add_row("total time", f"{r['total_seconds']:.2f} s", "the whole run, model load included")
    table.add_section()
    spent_note = (
        "list price of the calls made" if r["live"] else "list price (stand-in: not billed)"
    )
    table.add_row("dollars spent", f"${r['spent_usd']:,.2f}", spent_note)
    table.add_row("dollars saved", f"${r['saved_usd']:,.2f}", "list price of the calls avoided")
    table.add_section()
    table.add_row("hits by tier", "", ", ".join(f"{t} {r['by_tier'].get(t, 0)}" for t in TIERS))
    table.add_row("hits by match", "", ", ".join(f"{m} {r['by_match'].get(m, 0)}" for m in MATCHES))
    if errors:
        table.add_row("errors", f"{len(errors)}", repr(errors[0])[:60])
    console.print(table)
