"""``imgcache demo``: a realistic stream of image requests replayed through the cache.

The stream is drawn in demo_stream.py and replayed in demo_run.py, both imported only when the
command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ._common import CONFIG_ERROR, FAILURE, _fail


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

    from ..errors import ImgcacheError
    from .demo_run import run_demo
    from .demo_stream import LIVE_PROMPTS, live_cost_ceiling

    console = Console()
    if live:
        if not os.environ.get("OPENAI_API_KEY"):
            _fail("--live needs OPENAI_API_KEY in the environment", CONFIG_ERROR)
        if not yes:
            typer.confirm(
                f"--live makes up to {LIVE_PROMPTS} real dall-e-2 256x256 calls "
                f"(about ${live_cost_ceiling():.2f}). Go on?",
                abort=True,
            )
    try:
        run_demo(requests, latency, directory, live, console)
    except ImportError as exc:
        if exc.name != "openai":
            raise
        _fail("the demo needs the OpenAI SDK: pip install 'imgcache[openai]'", FAILURE)
    except ImgcacheError as exc:
        _fail(str(exc), CONFIG_ERROR if isinstance(exc, ValueError) else FAILURE)
