"""Pruning the local cache directory (``imgcache.store.prune``, ``imgcache prune``), on entries written
by the real cache front and read back by a fresh one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from imgcache import Cache
from imgcache.store.disk import DiskTier
from imgcache.store.prune import prune

PAYLOAD = 50_000  # bytes per result: large next to a manifest, so sizes are easy to reason about


def results_of(directory: Path, namespace: str = "p", ttl: float | None = None
               ) -> tuple[Cache, Callable[[str], bytes], list[str]]:
    """A cache on ``directory`` with a decorated stand-in generator; the list records upstream calls."""
    cache = Cache(namespace, directory=directory, ttl=ttl, semantic=False)
    calls: list[str] = []

    @cache.cached(name="tests.prune")
    def draw(*, prompt: str) -> bytes:
        calls.append(prompt)
        return prompt.encode().ljust(PAYLOAD, b".")

    return cache, lambda prompt: draw(prompt=prompt), calls


def files(directory: Path, kind: str) -> list[Path]:
    return sorted(p for p in directory.glob(f"*/{kind}/*/*") if p.is_file())


def fill(directory: Path, prompts: list[str], **options: object) -> None:
    cache, draw, _ = results_of(directory, **options)  # type: ignore[arg-type]
    with cache:
        for prompt in prompts:
            draw(prompt)


def served_without_upstream(directory: Path, prompts: list[str], **options: object) -> list[str]:
    """The prompts a fresh process would answer from the directory (no upstream call)."""
    cache, draw, calls = results_of(directory, **options)  # type: ignore[arg-type]
    with cache:
        for prompt in prompts:
            assert draw(prompt) == prompt.encode().ljust(PAYLOAD, b".")  # never a wrong answer
    return [p for p in prompts if p not in calls]


def test_expired_entries_and_their_blobs_go_live_ones_keep_serving(tmp_path: Path) -> None:
    fill(tmp_path, ["old a", "old b"], namespace="short", ttl=60)
    fill(tmp_path, ["kept a", "kept b"], namespace="long")
    assert len(files(tmp_path, "e")) == 4 and len(files(tmp_path, "b")) == 4

    report = prune(DiskTier(tmp_path), now=time.time() + 3600, grace=0)

    assert (report.expired, report.orphans, report.invalid, report.evicted) == (2, 2, 0, 0)
    assert (report.entries, report.blobs) == (2, 2)
    assert report.freed_bytes >= 2 * PAYLOAD
    assert all("/long/" in str(p) for p in files(tmp_path, "e") + files(tmp_path, "b"))
    assert served_without_upstream(tmp_path, ["kept a", "kept b"], namespace="long") == ["kept a", "kept b"]


def test_size_cap_evicts_least_recently_used_first(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(6)]
    fill(tmp_path, prompts)
    entries = {json.loads(p.read_bytes())["key"]: p for p in files(tmp_path, "e")}
    assert len(entries) == 6
    # written in order; then a fresh process reads prompts 0 and 1 again: most recently used
    base = time.time() - 1000
    for i, path in enumerate(sorted(entries.values(), key=lambda p: p.stat().st_mtime_ns)):
        os.utime(path, (base + i, base + i))
    for blob in files(tmp_path, "b"):
        os.utime(blob, (base, base))
    assert served_without_upstream(tmp_path, prompts[:2]) == prompts[:2]  # touches their entries

    report = prune(DiskTier(tmp_path), max_bytes=int(3.5 * PAYLOAD), grace=0)

    assert report.evicted == 3 and report.orphans == 3 and report.entries == 3
    assert report.kept_bytes <= 3.5 * PAYLOAD
    assert report.kept_bytes == sum(p.stat().st_size for p in files(tmp_path, "e") + files(tmp_path, "b"))
    # kept: the two just read and the newest written; the three oldest unread ones are gone
    assert served_without_upstream(tmp_path, prompts) == [prompts[0], prompts[1], prompts[5]]


def test_blob_shared_by_two_entries_stays_while_one_needs_it(tmp_path: Path) -> None:
    cache = Cache("p", directory=tmp_path, semantic=False)

    @cache.cached(name="tests.same_bytes")
    def draw(*, prompt: str) -> bytes:
        return b"identical result".ljust(PAYLOAD, b".")

    with cache:
        draw(prompt="first")
        draw(prompt="second")
    assert len(files(tmp_path, "e")) == 2 and len(files(tmp_path, "b")) == 1
    first, second = sorted(files(tmp_path, "e"), key=lambda p: p.stat().st_mtime_ns)
    os.utime(first, (1, 1))

    total = sum(p.stat().st_size for p in files(tmp_path, "e") + files(tmp_path, "b"))
    report = prune(DiskTier(tmp_path), max_bytes=total - 1, grace=0)  # one entry must go

    assert (report.evicted, report.orphans) == (1, 0)
    assert not first.exists() and second.exists() and len(files(tmp_path, "b")) == 1


def test_damaged_entries_half_written_files_and_orphans_respect_the_grace_period(tmp_path: Path) -> None:
    fill(tmp_path, ["a"])
    [entry] = files(tmp_path, "e")
    shard = entry.parent
    damaged = shard / ("f" * 64)
    damaged.write_bytes(b'{"v": 1, "truncated')
    old_tmp = shard / f".{'e' * 64}.0123456789ab.tmp"
    new_tmp = shard / f".{'d' * 64}.ba9876543210.tmp"
    old_tmp.write_bytes(b"partial")
    new_tmp.write_bytes(b"partial")
    os.utime(old_tmp, (1, 1))
    orphan = files(tmp_path, "b")[0].parent / ("c" * 64)
    orphan.write_bytes(b"no entry names me")
    other = [tmp_path / "p" / "stats.json", tmp_path / "p" / "notes.txt"]
    other[1].write_text("not the cache's")
    before = {p: p.read_bytes() for p in other}

    report = prune(DiskTier(tmp_path))  # grace: an hour

    assert (report.invalid, report.temporaries, report.orphans) == (1, 1, 0)
    assert not damaged.exists() and not old_tmp.exists() and new_tmp.exists() and orphan.exists()
    assert prune(DiskTier(tmp_path), grace=0).orphans == 1 and not orphan.exists()
    assert {p: p.read_bytes() for p in other} == before  # counters and foreign files untouched
    assert served_without_upstream(tmp_path, ["a"]) == ["a"]


def test_dry_run_reports_and_removes_nothing(tmp_path: Path) -> None:
    fill(tmp_path, ["a", "b"], ttl=60)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    report = prune(DiskTier(tmp_path), now=time.time() + 3600, grace=0, dry_run=True)

    assert (report.expired, report.orphans, report.entries) == (2, 2, 0) and report.freed_bytes > 2 * PAYLOAD
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_reading_an_entry_marks_it_used(tmp_path: Path) -> None:
    fill(tmp_path, ["a"])
    [entry] = files(tmp_path, "e")
    os.utime(entry, (1, 1))
    assert served_without_upstream(tmp_path, ["a"]) == ["a"]
    assert entry.stat().st_mtime > time.time() - 60


def test_missing_directory_prunes_nothing(tmp_path: Path) -> None:
    report = prune(DiskTier(tmp_path / "absent"), max_bytes=0)
    assert report.as_dict() == dict.fromkeys(report.as_dict(), 0)


# --- the size cap with young blobs: ``imgcache prune`` run for real -----------------------------


def prune_cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCACHE_")}
    env.update(IMGCACHE_DIR=str(directory), COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "imgcache.cli", "prune", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def stored_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in files(directory, "e") + files(directory, "b"))


def test_evicted_entries_take_their_young_blobs_so_the_directory_fits(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(64)]
    fill(tmp_path, prompts)  # every file written just now: far younger than the 1 h grace
    assert stored_bytes(tmp_path) > 64 * PAYLOAD

    result = prune_cli(tmp_path, "--max-size", "100KB", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["evicted"], report["orphans"], report["entries"], report["blobs"]) == (63, 63, 1, 1)
    assert report["over_limit_bytes"] == 0 and report["pending_blobs"] == 0 and report["max_bytes"] == 100_000
    assert stored_bytes(tmp_path) == report["kept_bytes"] <= 100_000
    assert served_without_upstream(tmp_path, prompts[-1:]) == prompts[-1:]  # the newest stays, whole


def test_blobs_no_entry_references_yet_keep_their_grace_and_the_overrun_is_reported(tmp_path: Path) -> None:
    fill(tmp_path, ["a", "b"])
    # A writer in progress: its blob is stored, its manifest not yet (what a writer does first).
    pending = b"a result being stored".ljust(3 * PAYLOAD, b".")
    digest = hashlib.sha256(pending).hexdigest()
    DiskTier(tmp_path).set(f"p/b/{digest}", pending)
    [blob] = [p for p in files(tmp_path, "b") if p.name == digest]

    text = prune_cli(tmp_path, "--max-size", "100KB")
    assert text.returncode == 3, text.stdout + text.stderr
    assert "removed 0 expired, 0 damaged and 2 evicted entries, 2 unused blobs" in text.stdout
    over = len(pending) - 100_000
    assert (f"still over --max-size 100KB by {over / 1024:,.1f} KiB: 1 blob ({len(pending) / 1024:,.1f} KiB) "
            "that no entry references yet, younger than --grace 1h (writes in progress), kept") in text.stdout
    assert blob.exists() and files(tmp_path, "e") == []

    dry = prune_cli(tmp_path, "--max-size", "100KB", "--dry-run", "--json")
    assert dry.returncode == 3
    assert {k: json.loads(dry.stdout)[k] for k in ("over_limit_bytes", "pending_blobs", "pending_bytes")} == {
        "over_limit_bytes": over, "pending_blobs": 1, "pending_bytes": len(pending)}

    done = prune_cli(tmp_path, "--max-size", "100KB", "--grace", "0", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["over_limit_bytes"] == 0
    assert not blob.exists()


def test_expired_entries_take_their_blobs_whatever_their_age(tmp_path: Path) -> None:
    fill(tmp_path, ["old a", "old b"], ttl=60)
    fill(tmp_path, ["kept"], namespace="long")

    report = prune(DiskTier(tmp_path), now=time.time() + 120)  # the default hour of grace

    assert (report.expired, report.orphans, report.entries, report.blobs) == (2, 2, 1, 1)
    assert all("/long/" in str(p) for p in files(tmp_path, "e") + files(tmp_path, "b"))
