"""``prewarm()``: the prewarm job as one function, for schedulers (cron, Celery beat, a
Kubernetes CronJob) and scripts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from ..spend.outcomes import MAX_WAIT
from .inputs import read_items
from .job import PrewarmJob, PrewarmReport, Progress
from .upstream import OpenAIUpstream

if TYPE_CHECKING:
    from ..cache import Cache


def prewarm(
    source: str | os.PathLike[str] | TextIO | Iterable[Any],
    *,
    cache: Cache | None = None,
    client: Any = None,
    call: Callable[..., Any] | None = None,
    params: Mapping[str, Any] | None = None,
    format: str = "auto",
    rpm: float | None = None,
    ipm: float | None = None,
    concurrency: int = 4,
    max_usd: float | None = None,
    dry_run: bool = False,
    retries: int = 3,
    timeout: float | None = None,
    lease: float = 30.0,
    refusal_ttl: float = 86400.0,
    retry_refused: bool = False,
    semantic: bool = True,
    max_wait: float = MAX_WAIT,
    price: Callable[[dict[str, Any]], float | None] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    job: str | None = None,
) -> PrewarmReport:
    """Generate the images of ``source``'s prompts that the cache does not hold yet.

    ``source``: a path (text, ``.jsonl`` or ``.csv``; ``"-"`` for standard input), an open text
    file, or an iterable of prompts, dicts (``{"prompt": ..., "size": ...}``) or
    :class:`PrewarmItem` (:func:`from_history` gives those). ``params`` are the
    ``images.generate`` parameters every prompt gets unless its line sets its own
    (``{"model": "dall-e-3", "size": "1024x1024"}``).

    ``cache``: default :meth:`Cache.from_env` (closed again at the end). ``client``: an
    ``openai.OpenAI`` (its retries are turned off: the job retries); default, one made from
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. Or ``call``: any callable taking
    ``images.generate``'s keyword arguments and returning an ``ImagesResponse``, a dict of that
    shape, or the bytes of one image.

    Limits: ``rpm`` requests and ``ipm`` images per minute per model (shared by every worker
    on the same Redis), at most ``concurrency`` calls at once, and ``max_usd`` dollars for the
    job, reserved at list price before each call: every worker of the job (the same ``job``
    name; by default, the same prompts and parameters) draws on it, through Redis or the
    directory, and a job resumed within a day goes on from what it spent. ``retries`` for 5xx answers and timeouts
    (``timeout`` seconds per call); 429s wait for their Retry-After (at most ``max_wait``
    seconds) or back off. A refused prompt (content policy, a bad parameter) is recorded for
    ``refusal_ttl`` seconds and skipped by later runs unless ``retry_refused``.

    ``semantic``: also skip prompts a verified semantic match answers. ``price``: your own
    price of a call from its canonical parameters (then models missing from the price table
    are allowed). ``lease``: seconds before a dead worker's claims go to the others.
    ``dry_run``: look everything up and count, call nothing. ``stop``: set it (from a signal
    handler, another thread) to stop cleanly, like Ctrl-C does.

    Returns a :class:`PrewarmReport`. Raises :class:`~imgcache.errors.ConfigError` for bad
    options or an unreadable source; bad lines are reported in the report, not raised.
    """
    own_cache = cache is None
    if cache is None:
        from ..cache import Cache

        cache = Cache.from_env()
    try:
        upstream = OpenAIUpstream(cache, client=client, call=call, timeout=timeout, priced=price is None)
        job = PrewarmJob(cache, upstream, rpm=rpm, ipm=ipm, concurrency=concurrency, max_usd=max_usd,
                         dry_run=dry_run, retries=retries, lease=lease, refusal_ttl=refusal_ttl,
                         retry_refused=retry_refused, semantic=semantic, max_wait=max_wait, price=price,
                         progress=progress, job=job)
        done = threading.Event()
        if stop is not None:
            threading.Thread(target=_watch, args=(stop, done, job), daemon=True).start()
        try:
            return job.run(list(read_items(source, format=format, params=params)))
        finally:
            done.set()
    finally:
        if own_cache:
            cache.close()


def _watch(stop: threading.Event, done: threading.Event, job: PrewarmJob) -> None:
    while not done.is_set():
        if stop.wait(0.2):
            job.stop()
            return
