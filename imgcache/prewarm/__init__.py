"""Prewarm: fill the cache ahead of demand, within rate limits and a budget.

    from imgcache.prewarm import prewarm, from_history

    report = prewarm("prompts.txt", cache=cache, params={"model": "dall-e-3"}, rpm=5, max_usd=20)
    report = prewarm(from_history(cache, 500), cache=cache, rpm=5)

The same job runs from the command line as ``imgcache prewarm``. Modules: ``inputs`` (text,
JSONL, CSV, with line numbers), ``upstream`` (keyed and stored like a live ``wrap()`` call),
``budget``, ``claims`` (cooperation between workers), ``history`` (the prompts worth
warming, from the front's request log), ``job`` (the runner), ``progress`` (the CLI's bar
and log lines); the token buckets and the reading of upstream failures (429, 5xx, refusals)
are shared with live calls (:mod:`imgcache.spend.limiter`, :mod:`imgcache.spend.outcomes`).
Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

__all__ = [
    "Failure",
    "InputProblem",
    "PrewarmItem",
    "PrewarmJob",
    "PrewarmReport",
    "from_history",
    "prewarm",
    "read_items",
    "recent_runs",
]

_LAZY = {
    "Failure": "imgcache.prewarm.job",
    "InputProblem": "imgcache.prewarm.inputs",
    "PrewarmItem": "imgcache.prewarm.inputs",
    "PrewarmJob": "imgcache.prewarm.job",
    "PrewarmReport": "imgcache.prewarm.job",
    "from_history": "imgcache.prewarm.history",
    "prewarm": "imgcache.prewarm.run",
    "read_items": "imgcache.prewarm.inputs",
    "recent_runs": "imgcache.prewarm.job",
}

if TYPE_CHECKING:
    from .history import from_history
    from .inputs import InputProblem, PrewarmItem, read_items
    from .job import Failure, PrewarmJob, PrewarmReport, recent_runs
    from .run import prewarm


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
