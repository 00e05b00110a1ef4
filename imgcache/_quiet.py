"""Third-party progress bars kept out of output that is not a terminal.

Loading a sentence-transformers model draws transformers' tqdm bar ("Loading weights: 100%|...")
on stderr. On a terminal that is a passing line; in a log, a pipe or the proxy's JSON access log
(one object a line on stderr) it is garbage in the middle of the output. :func:`quiet_progress_bars`
turns transformers' and the Hugging Face hub's bars off for the duration of a block, and puts them
back as they were.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@contextlib.contextmanager
def quiet_progress_bars(quiet: bool | None = None) -> Iterator[None]:
    """Inside the block, no transformers / huggingface_hub progress bar: with ``quiet=True``
    always, by default (None) when stderr is not a terminal. Call it where transformers may be
    imported (it imports ``transformers.utils.logging``); without transformers it does nothing."""
    if quiet is None:
        quiet = not is_terminal(sys.stderr)
    if not quiet:
        yield
        return
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        yield
        return
    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # the hub's bars too
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()
