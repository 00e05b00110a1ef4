"""The ``imgcache`` console script.

    imgcache stats [--json] [--namespace NS]   figures of every namespace and process sharing the cache
    imgcache prune [--max-size SIZE] [--dry-run] remove expired and least recently used files
    imgcache demo [--requests N] [--latency S]  replay a request stream against a local stand-in
    imgcache inspect PROMPT [-p NAME=VALUE]     why a prompt would (not) match: key, entry, candidates
    imgcache prewarm PROMPTS --model M [...]    generate ahead of demand, within rate limits and a budget
    imgcache serve [--port N] [--upstream URL]  an OpenAI-compatible caching proxy for any client

A module per command (stats.py, prune.py, ...), each registered on ``app`` here. Every one of
them is imported to build the app, so their module level imports only typer and the standard
library: the cache, rich's renderables, openai and the storage drivers are imported inside the
commands that use them (the demo's request stream and replay in demo_stream.py and
demo_run.py, by the demo command), so ``imgcache --help`` and ``imgcache stats`` start fast
(and never load ML libraries).
"""

from __future__ import annotations

import typer

from . import demo, inspect, prewarm, prune, serve, stats
from ._common import CONFIG_ERROR, FAILURE, INTERRUPTED, PARTIAL

__all__ = ["CONFIG_ERROR", "FAILURE", "INTERRUPTED", "PARTIAL", "app", "main"]

app = typer.Typer(
    name="imgcache",
    help="Content-addressed cache for image-generation API calls.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# In this order in --help.
for _command in (stats.stats, prune.prune, demo.demo, inspect.inspect, prewarm.prewarm, serve.serve):
    app.command()(_command)


def main() -> None:
    """Entry point of the ``imgcache`` console script."""
    app()
