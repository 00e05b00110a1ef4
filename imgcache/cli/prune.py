"""``imgcache prune``: remove what the local cache directory no longer needs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ._common import CONFIG_ERROR, FAILURE, PARTIAL, _fail


def prune(
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Then evict the least recently used entries until entries and "
                     "blobs fit in this size (5GB, 500MiB)."),
    ] = None,
    grace: Annotated[
        str, typer.Option("--grace", help="Keep blobs no entry references yet (writes in progress) and "
                                 "half-written files younger than this (1h, 90s).")
    ] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; remove nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Remove what the local cache directory no longer needs: expired or damaged entries, blobs
    no entry uses, and with --max-size the least recently used entries (every namespace).

    The directory is IMGCACHE_DIR, or the user's cache directory when neither Redis nor S3 is
    configured. Safe while other processes use the cache: what they miss they refetch.

    An evicted or expired entry's blobs go with it; blobs no entry references yet (a write in
    progress) are kept while younger than --grace. Exit status 3 when those alone keep the
    directory over --max-size (it says by how much), 0 otherwise.
    """
    from .._config import parse_bytes, parse_duration
    from ..cache import Cache
    from ..errors import TierError

    try:
        limit = parse_bytes(max_size, "--max-size") if max_size is not None else None
        keep_for = parse_duration(grace, "--grace") or 0.0
        cache = Cache.from_env()
    except ValueError as exc:
        _fail(str(exc), CONFIG_ERROR)
    try:
        report = cache.prune(max_bytes=limit, grace=keep_for, dry_run=dry_run)
    except TierError as exc:
        _fail(str(exc), FAILURE)
    finally:
        cache.close()
    if report is None:
        _fail("no local cache directory: set IMGCACHE_DIR (Redis and S3 expire entries themselves)",
              CONFIG_ERROR)
    if as_json:
        typer.echo(json.dumps({"directory": str(cache.directory), "dry_run": dry_run, "max_bytes": limit,
                               **report.as_dict()}, indent=2, sort_keys=True))
    else:
        verb = "would remove" if dry_run else "removed"
        typer.echo(f"{cache.directory}: {verb} {report.expired} expired, {report.invalid} damaged and "
                   f"{report.evicted} evicted entries, {report.orphans} unused blobs, {report.temporaries} "
                   f"half-written files ({_size(report.freed_bytes)}); kept {report.entries} entries and "
                   f"{report.blobs} blobs ({_size(report.kept_bytes)})")
        if report.over_limit_bytes:
            typer.echo(f"still over --max-size {max_size} by {_size(report.over_limit_bytes)}"
                       + (" (dry run)" if dry_run else "")
                       + f": {report.pending_blobs} blob{'' if report.pending_blobs == 1 else 's'} "
                       f"({_size(report.pending_bytes)}) that no entry references yet, younger than --grace "
                       f"{grace} (writes in progress), kept; "
                       "prune again once they are older, or with a shorter --grace")
    if report.over_limit_bytes:
        raise typer.Exit(PARTIAL)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"
