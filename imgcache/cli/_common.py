"""What the commands of the ``imgcache`` console script share: their exit codes and how they fail."""

from __future__ import annotations

from typing import NoReturn

import typer

CONFIG_ERROR = 2
"""Exit code for a configuration value the cache cannot use (like a usage error)."""
FAILURE = 1
PARTIAL = 3
"""Exit code of a prewarm run that finished with prompts left uncached (see its summary), and of
a prune that could not bring the directory within --max-size (blobs kept for their grace)."""
INTERRUPTED = 130


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"imgcache: error: {message}", err=True)
    raise typer.Exit(code)
