"""Perceptual index snapshots (issue 17): one snapshot of every scope, searched memory-mapped
as the in-process index would search it; scopes kept apart whatever the files hold; removals
and expiry under churn; a round written by one worker and mapped by the next."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from _helpers import Upstream, encode
from _samples import sample_path
from PIL import Image

from imgcache import Cache
from imgcache.match.config import VisionOptions
from imgcache.match.perceptual import mapped as mapped_module
from imgcache.match.perceptual.hamming import HammingIndex
from imgcache.match.perceptual.index import PerceptualIndex
from imgcache.match.perceptual.mapped import ALL, MappedPhashes

RNG_SEED = 17


def scope(i: int) -> str:
    return f"{i:032x}"


def key(scope_number: int, row: int) -> str:
    """Row ``row`` of scope ``scope_number``'s key: a sha256, as a request's key is."""
    return hashlib.sha256(f"{scope_number}:{row}".encode()).hexdigest()


def near(value: int, bits: int, rng: np.random.Generator) -> int:
    """``value`` with ``bits`` random bits flipped."""
    for bit in rng.choice(64, size=bits, replace=False).tolist():
        value ^= 1 << bit
    return value


def random_hashes(rng: np.random.Generator, count: int) -> list[int]:
    return rng.integers(0, 2**63, size=count, dtype=np.int64).astype(np.uint64).tolist()


def written(index: PerceptualIndex, directory: Path) -> MappedPhashes:
    directory.mkdir()
    index.write_snapshot(index, directory)
    return MappedPhashes(directory)


def test_a_snapshot_finds_what_the_in_process_index_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small scopes (scanned) and large ones (searched through their tables), with
    planted neighbours: the mapped snapshot proposes exactly the entries within the radius."""
    monkeypatch.setattr(mapped_module, "TABLE_MIN_ROWS", 4000)
    rng = np.random.default_rng(RNG_SEED)
    sizes = {**{i: int(rng.integers(1, 40)) for i in range(200)}, 500: 9000, 501: 5000}
    data: dict[str, list[tuple[str, int, float]]] = {}
    for number, size in sizes.items():
        hashes = random_hashes(rng, size)
        for row in range(0, size, 7):  # neighbours of earlier rows within 0-12 bits
            hashes[row] = near(hashes[row // 2], int(rng.integers(0, 13)), rng)
        data[scope(number)] = [(key(number, row), h, 0.0) for row, h in enumerate(hashes)]
    index = PerceptualIndex()
    reference: dict[str, HammingIndex] = {}
    for scope_id, items in data.items():
        index.add_many(scope_id, items)
        reference[scope_id] = HammingIndex()
        reference[scope_id].add_many([(k, h) for k, h, _ in items])
    snapshot = written(index, tmp_path / "snap")
    assert snapshot.rows == sum(sizes.values())
    assert json.loads((tmp_path / "snap" / "meta.json").read_text())["tabled"] == 2
    worker = PerceptualIndex()
    worker.stand_on(ALL, snapshot, "0-0")
    assert worker.own_rows == 0 and len(worker) == snapshot.rows
    for _ in range(400):
        scope_id = list(data)[int(rng.integers(0, len(data)))] if rng.random() < 0.5 else scope(500)
        items = data[scope_id]
        query = near(items[int(rng.integers(0, len(items)))][1], int(rng.integers(0, 8)), rng)
        radius = int(rng.choice([0, 4, 8, 10, 12, 20]))
        assert sorted(worker.search(scope_id, query, radius), key=lambda kv: (kv[1], kv[0])) == sorted(
            reference[scope_id].search(query, radius), key=lambda kv: (kv[1], kv[0]))
    assert worker.search(scope(999), data[scope(3)][0][1], 64) == []  # a scope it does not hold


def test_no_entry_of_another_scope_is_proposed_whatever_the_files_hold(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapped_module, "TABLE_MIN_ROWS", 100)
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 300)
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, row), h, 0.0) for row, h in enumerate(hashes)])  # tabled
    index.add_many(scope(2), [(key(2, row), h, 0.0) for row, h in enumerate(hashes[:50])])  # the same hashes
    directory = tmp_path / "snap"
    snapshot = written(index, directory)
    worker = PerceptualIndex()
    worker.stand_on(ALL, snapshot, "0-0")
    first, second = {key(1, row) for row in range(300)}, {key(2, row) for row in range(50)}
    for row in range(50):
        assert {k for k, _ in worker.search(scope(1), hashes[row], 64)} == first
        assert {k for k, _ in worker.search(scope(2), hashes[row], 64)} == second
        assert (key(1, row), 0) in worker.search(scope(1), hashes[row], 10)
    # Tables that name rows past their scope (its neighbour's) are cut at the scope's end.
    tables = np.fromfile(directory / "tables.bin", dtype=np.uint32)
    tables[:] = np.arange(len(tables), dtype=np.uint32) % 350 + 300
    for name in ("tables.bin",):
        (directory / name).chmod(0o600)
    tables.tofile(directory / "tables.bin")
    worker = PerceptualIndex()
    worker.stand_on(ALL, MappedPhashes(directory), "0-0")
    for row in range(50):
        assert {k for k, _ in worker.search(scope(1), hashes[row], 10)} <= first
    # Boundaries that do not fit the rows are refused on opening.
    bounds = np.fromfile(directory / "scope_rows.bin", dtype=np.uint64)
    bounds[1] = 10**6
    bounds.tofile(directory / "scope_rows.bin")
    with pytest.raises(ValueError):
        MappedPhashes(directory)


def test_removed_and_expired_entries_are_never_proposed_and_the_next_snapshot_leaves_them_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 6)
    now = time.time()
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, 0), hashes[0], 0.0), (key(1, 1), hashes[1], now + 3600),
                              (key(1, 2), hashes[2], now - 1), (key(1, 3), hashes[3], now + 3600)])
    assert index.search(scope(1), hashes[2], 0) == []  # expired among the process's own rows
    worker = PerceptualIndex()
    worker.stand_on(ALL, written(index, tmp_path / "first"), "0-0")
    assert worker.snapshot is not None and worker.snapshot.rows == 3  # the expired one left out
    assert worker.remove(scope(1), key(1, 0)) and not worker.remove(scope(2), key(1, 1))  # not its scope
    assert worker.search(scope(1), hashes[0], 0) == []
    np.asarray(worker.snapshot.until)  # mapped read-only: expiry is a filter, not a write
    worker.add_many(scope(1), [(key(1, 4), hashes[4], 0.0)])
    worker.add_many(scope(1), [(key(1, 1), hashes[1], now + 1)])  # stored to expire sooner: the row stays
    assert worker.own_rows == 1
    worker.add_many(scope(1), [(key(1, 3), hashes[3], now + 7200)])  # stored again to live longer
    assert worker.own_rows == 2 and worker.search(scope(1), hashes[3], 0) == [(key(1, 3), 0)]
    after = written(worker, tmp_path / "second")
    assert sorted(after.keys.key(row) for row in range(after.rows)) == sorted([key(1, 1), key(1, 3), key(1, 4)])
    row = int(after.keys.find([key(1, 3)])[0])
    assert after.until[row] == int(np.ceil(now + 7200))


def test_a_worker_keeps_its_own_rows_and_removals_when_it_stands_on_a_newer_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 5)
    writer = PerceptualIndex()
    writer.add_many(scope(1), [(key(1, row), hashes[row], 0.0) for row in range(3)])
    older = written(writer, tmp_path / "older")
    writer.add_many(scope(1), [(key(1, 3), hashes[3], 0.0)])
    newer = written(writer, tmp_path / "newer")
    worker = PerceptualIndex()
    worker.stand_on(ALL, older, "0-0")
    worker.add_many(scope(1), [(key(1, 3), hashes[3], 0.0), (key(1, 4), hashes[4], 0.0)])
    worker.remove(scope(1), key(1, 0))  # removed after the newer snapshot was written
    worker.stand_on(ALL, newer, "0-0")
    assert worker.snapshot is newer and worker.own_rows == 1  # key 3 is in the newer snapshot
    assert worker.search(scope(1), hashes[0], 0) == []
    assert worker.search(scope(1), hashes[4], 0) == [(key(1, 4), 0)]
    assert worker.search(scope(1), hashes[3], 0) == [(key(1, 3), 0)]


# --- through the cache: a round written by one worker, mapped by another --------------------------


def picture(i: int) -> bytes:
    """Picture ``i``: a crop of a sample photo (a different picture for each ``i``)."""
    img = Image.open(sample_path("astronaut.png")).convert("RGB")
    x, y = (i % 6) * 48, (i // 6) * 48
    return encode(img.crop((x, y, x + 224, y + 224)))


def copy_of(i: int) -> bytes:
    img = Image.open(sample_path("astronaut.png")).convert("RGB")
    x, y = (i % 6) * 48, (i // 6) * 48
    return encode(img.crop((x, y, x + 224, y + 224)), "JPEG", quality=85)


def answers() -> Upstream:
    """A stand-in vision API: every answer is new (numbered), so a stored one is told apart."""
    return Upstream(lambda n, image, prompt: f"answer {n} to {prompt}", numbered=True)


def worker(tmp_path: Path, host: str, redis_url: str, namespace: str = "ns") -> Cache:
    return Cache(namespace, redis_url=redis_url, semantic=False,
                 vision=VisionOptions(snapshot_rows=4, snapshot_dir=str(tmp_path / f"host-{host}")))


def describer(cache: Cache, upstream: Upstream) -> Any:
    @cache.cached(kind="vision", name="describe")
    def describe(image: bytes, prompt: str) -> str:
        return upstream(image, prompt)

    return describe


def write_round(cache: Cache) -> None:
    matcher = cache._lookup.perceptual  # white-box: the snapshot layer under test
    assert matcher is not None
    matcher.rounds.settle()
    matcher.rounds.read_feed()
    matcher.rounds.check()
    assert matcher.rounds.standing is not None


def fill_and_write(writer: Cache, upstream: Upstream, pictures: int = 6) -> Any:
    """Ask the same question about ``pictures`` pictures, then write a round; the describer."""
    describe = describer(writer, upstream)
    for i in range(pictures):
        describe(picture(i), "what is in this picture?")
    write_round(writer)
    return describe


def test_a_new_worker_answers_copies_from_the_round_another_wrote(tmp_path: Path, redis_url: str) -> None:
    upstream = answers()
    prompts = ["what is in this picture?", "describe the colours", "is there a person?"]
    with worker(tmp_path, "a", redis_url) as writer:
        describe = describer(writer, upstream)
        for i in range(8):
            describe(picture(i), prompts[i % 3])
        write_round(writer)
    calls = upstream.calls
    with worker(tmp_path, "b", redis_url) as reader:
        describe = describer(reader, upstream)
        for i in range(8):
            describe(copy_of(i), prompts[i % 3])
        assert upstream.calls == calls  # every copy answered by the stored picture
        matcher = reader._lookup.perceptual
        assert matcher is not None and matcher.index.snapshot is not None
        assert matcher.index.snapshot.rows == 8 and matcher.index.own_rows == 0
        describe(copy_of(0), prompts[1])  # the same picture, another question: never answered
        assert upstream.calls == calls + 1
    directory = tmp_path / "host-b" / "ns" / "perceptual"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in files)
    with worker(tmp_path, "c", redis_url, namespace="other") as stranger:
        describer(stranger, upstream)(copy_of(0), prompts[0])
        assert upstream.calls == calls + 2  # no round crosses namespaces
        assert stranger._lookup.perceptual is not None and stranger._lookup.perceptual.index.snapshot is None


def test_an_entry_gone_after_the_round_is_removed_everywhere(tmp_path: Path, redis_url: str) -> None:
    upstream = answers()
    with worker(tmp_path, "a", redis_url) as writer:
        describe = fill_and_write(writer, upstream)
        gone = describe.cache_key(picture(2), "what is in this picture?")
        describe.invalidate(picture(2), "what is in this picture?")
    with worker(tmp_path, "b", redis_url) as reader:
        calls = upstream.calls
        describer(reader, upstream)(copy_of(2), "what is in this picture?")
        assert upstream.calls == calls + 1  # gone: called again, and a removal record put out
    with worker(tmp_path, "c", redis_url) as third:
        matcher = third._lookup.perceptual
        assert matcher is not None
        matcher.sync(force=True)  # stands on the round, then reads the removal record
        index = matcher.index
        assert index.snapshot is not None
        row = int(index.snapshot.keys.find([gone])[0])
        assert row >= 0 and index._dead is not None and index._dead[row]
        assert index.own_rows == 1 and len(index) == 6  # five of the round, and the copy b stored


def test_a_damaged_copy_on_the_host_is_fetched_anew_and_a_damaged_store_falls_back_to_the_feed(
        tmp_path: Path, redis_url: str) -> None:
    upstream = answers()
    with worker(tmp_path, "a", redis_url) as writer:
        fill_and_write(writer, upstream)
        assert writer.stats(shared=True)["index_snapshots"]["perceptual"]["usable"]
    (hashes_file,) = (tmp_path / "host-a" / "ns" / "perceptual").glob("*/hashes.bin")
    hashes_file.write_bytes(bytes(len(hashes_file.read_bytes())))  # every phash zeroed: still the right size
    calls = upstream.calls
    with worker(tmp_path, "a", redis_url) as again:
        describer(again, upstream)(copy_of(3), "what is in this picture?")
        matcher = again._lookup.perceptual
        assert matcher is not None and matcher.index.snapshot is not None
        assert upstream.calls == calls  # fetched from Redis whole, then mapped
        assert any(np.asarray(matcher.index.snapshot.hashes))
    client = redis.Redis.from_url(redis_url)
    (manifest,) = (tmp_path / "host-a" / "ns" / "perceptual").glob("*/.verified")
    for spec in json.loads(manifest.read_bytes())["files"].values():
        for part in spec["parts"]:  # every part of the snapshot damaged in Redis
            name = "imgcache:ns:b:{" + hashlib.sha256(f"snapshot:perceptual:{part}".encode()).hexdigest() + "}"
            value = client.get(name)
            assert value
            client.set(name, value[:-1] + bytes([value[-1] ^ 1]))
    with worker(tmp_path, "b", redis_url) as stranger:
        describer(stranger, upstream)(copy_of(4), "what is in this picture?")
        matcher = stranger._lookup.perceptual
        assert matcher is not None and matcher.index.snapshot is None  # not mapped: a part failed its digest
        assert upstream.calls == calls  # the whole feed answered
        assert stranger.stats(shared=True)["index_snapshots"]["perceptual"]["reported_bad"] == 1


def test_snapshots_of_the_layout_before_one_directory_per_feed_are_removed(tmp_path: Path, redis_url: str) -> None:
    legacy = tmp_path / "host-a" / "ns" / ("ab" * 32)
    legacy.mkdir(parents=True)
    (legacy / "graph.usearch").write_bytes(b"old")
    os.utime(legacy, (0, 0))
    with worker(tmp_path, "a", redis_url) as writer:
        fill_and_write(writer, answers())
    assert not legacy.exists()
    assert any((tmp_path / "host-a" / "ns" / "perceptual").iterdir())


# --- found by a review --------------------------------------------------------------------------


def _snapshot_of(tmp_path: Path, rows: int = 200, tabled: bool = False) -> Path:
    rng = np.random.default_rng(RNG_SEED)
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, row), h, 0.0) for row, h in enumerate(random_hashes(rng, rows))])
    index.add_many(scope(2), [(key(2, row), h, 0.0) for row, h in enumerate(random_hashes(rng, 20))])
    directory = tmp_path / "snap"
    written(index, directory)
    return directory


@pytest.mark.parametrize("damage", ["order past the rows", "order not a permutation", "prefixes not the keys'",
                                   "prefixes shared"])
def test_key_files_that_do_not_fit_are_refused_on_opening(tmp_path: Path, damage: str) -> None:
    """A lookup must neither read past a file (an IndexError on every call) nor scan rows
    one by one under the index's lock because the files say so."""
    directory = _snapshot_of(tmp_path)
    order = np.fromfile(directory / "order.bin", dtype=np.uint32)
    prefixes = np.fromfile(directory / "prefixes.bin", dtype=np.uint64)
    keys = np.fromfile(directory / "keys.bin", dtype=np.uint8).reshape(-1, 32)
    if damage == "order past the rows":
        order[5] = 2**32 - 1
    elif damage == "order not a permutation":
        order[5] = order[6]
    elif damage == "prefixes not the keys'":
        prefixes[5] += 1
    else:  # every key given one prefix, every prefix file consistent with them
        keys[:, :8] = 7
        prefixes[:] = np.ascontiguousarray(keys[:1, :8]).view(">u8").astype(np.uint64)[0, 0]
    for name, array in (("order.bin", order), ("prefixes.bin", prefixes), ("keys.bin", keys)):
        array.tofile(directory / name)
    with pytest.raises(ValueError):
        MappedPhashes(directory)


@pytest.mark.parametrize("damage", ["a block bigger than its scope", "a block for two scopes", "offsets past the file"])
def test_tables_that_do_not_fit_their_scope_are_refused_on_opening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    damage: str) -> None:
    """A search reads at most four table entries a row of its scope, whatever the files say."""
    monkeypatch.setattr(mapped_module, "TABLE_MIN_ROWS", 10)
    directory = _snapshot_of(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    offsets = np.fromfile(directory / "table_offsets.bin", dtype=np.int64).reshape(meta["tabled"], 4, -1)
    blocks = np.fromfile(directory / "scope_tables.bin", dtype=np.int64)
    assert meta["tabled"] == 2
    if damage == "a block bigger than its scope":  # each scope pointed at the other's tables
        blocks[[0, 1]] = blocks[[1, 0]]
    elif damage == "a block for two scopes":
        blocks[1] = blocks[0]
    else:
        offsets[0, 3, -1] = meta["table_entries"] + 1
    blocks.tofile(directory / "scope_tables.bin")
    offsets.tofile(directory / "table_offsets.bin")
    with pytest.raises(ValueError):
        MappedPhashes(directory)


def test_a_key_removed_and_stored_again_keeps_its_new_lifetime_when_a_newer_snapshot_holds_the_old(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    (phash,) = random_hashes(rng, 1)
    writer = PerceptualIndex()
    writer.add_many(scope(1), [(key(1, 0), phash, 0.0)])  # never expires
    older, newer = written(writer, tmp_path / "older"), written(writer, tmp_path / "newer")
    reader = PerceptualIndex()
    reader.stand_on(ALL, older, "0-0")
    reader.remove(scope(1), key(1, 0))
    soon = time.time() + 60
    reader.add_many(scope(1), [(key(1, 0), phash, soon)])  # stored again, for a minute
    reader.stand_on(ALL, newer, "0-0")  # written before the removal: it holds the entry that never expires
    assert reader.search(scope(1), phash, 0) == [(key(1, 0), 0)]
    again = written(reader, tmp_path / "again")
    assert again.until[int(again.keys.find([key(1, 0)])[0])] == int(np.ceil(soon))


@pytest.mark.parametrize("pages", [1, 2])
def test_two_records_of_one_key_keep_the_longer_lifetime_however_the_feed_is_paged(tmp_path: Path, pages: int) -> None:
    rng = np.random.default_rng(RNG_SEED)
    (phash,) = random_hashes(rng, 1)
    now = time.time()
    for first, second, kept in ((0.0, now + 60, 0), (now + 3600, now + 60, int(np.ceil(now + 3600)))):
        index = PerceptualIndex()
        records = [(key(1, 0), phash, first), (key(1, 0), phash, second)]
        for page in ([records] if pages == 1 else [records[:1], records[1:]]):
            index.add_many(scope(1), page)
        directory = tmp_path / f"{pages}-{first}"
        snapshot = written(index, directory)
        assert int(snapshot.until[0]) == kept


# --- found by a second review -------------------------------------------------------------------


def test_removals_a_round_covers_are_forgotten_once_a_worker_stands_on_it(tmp_path: Path) -> None:
    """Else a key removed and stored again stays this process's own row round after round,
    and its rows alone make a round due at every check."""
    rng = np.random.default_rng(RNG_SEED)
    (phash,) = random_hashes(rng, 1)
    writer, reader = PerceptualIndex(), PerceptualIndex()
    writer.add_many(scope(1), [(key(1, 0), phash, 0.0)])
    first = written(writer, tmp_path / "first")
    for index in (writer, reader):
        index.stand_on(ALL, first, "10-0")
        index.remove(scope(1), key(1, 0), read_at="11-0")  # read from the feed
        index.add_many(scope(1), [(key(1, 0), phash, time.time() + 3600)])  # stored again
    second = written(writer, tmp_path / "second")  # as of 12-0: after both
    reader.stand_on(ALL, second, "12-0")
    assert reader.own_rows == 0 and not reader.changed
    assert reader.search(scope(1), phash, 0) == [(key(1, 0), 0)]
    reader.remove(scope(1), key(1, 0))  # removed here, its record not read back yet: kept
    reader.stand_on(ALL, second, "13-0")
    assert reader.search(scope(1), phash, 0) == []


def test_expired_rows_of_a_process_are_dropped_when_it_stands_on_a_newer_snapshot(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 2)
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, 0), hashes[0], time.time() - 1), (key(1, 1), hashes[1], 0.0)])
    index.stand_on(ALL, written(PerceptualIndex(), tmp_path / "empty"), "1-0")
    assert index.own_rows == 1 and index.search(scope(1), hashes[1], 0) == [(key(1, 1), 0)]


def test_a_record_naming_another_scopes_key_touches_nothing_of_that_scope(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 2)
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, 0), hashes[0], 0.0)])
    index.stand_on(ALL, written(index, tmp_path / "snap"), "1-0")
    later = time.time() + 3600
    index.add_many(scope(2), [(key(1, 0), hashes[0], later)])  # scope 1's key, said to be scope 2's
    assert index.search(scope(1), hashes[0], 0) == [(key(1, 0), 0)]  # scope 1's row untouched
    assert not index.remove(scope(3), key(1, 0))
    assert index.search(scope(1), hashes[0], 0) == [(key(1, 0), 0)]
    soon = time.time() + 0.2
    index.add_many(scope(4), [(key(1, 1), hashes[1], soon)])
    index.add_many(scope(5), [(key(1, 1), hashes[1], 0.0)])
    index.remove(scope(5), key(1, 1))  # another scope's removal keeps scope 4's expiry
    time.sleep(0.3)
    assert index.search(scope(4), hashes[1], 0) == []


def test_a_feed_record_too_deep_to_parse_costs_that_record_only(tmp_path: Path, redis_url: str) -> None:
    upstream = answers()
    with worker(tmp_path, "a", redis_url) as writer:
        describe = describer(writer, upstream)
        describe(picture(0), "what is in this picture?")
        matcher = writer._lookup.perceptual
        assert matcher is not None
        matcher.feed.append([b"[" * 100_000 + b"]" * 100_000, b"[" * 400 + b"]" * 400])
        describe(picture(1), "what is in this picture?")
    with worker(tmp_path, "b", redis_url) as reader:
        calls = upstream.calls
        describe = describer(reader, upstream)
        describe(copy_of(1), "what is in this picture?")
        describe(copy_of(0), "what is in this picture?")
        assert upstream.calls == calls  # both entries indexed; the two bad records counted
        assert reader.stats()["corrupt"] >= 2


def test_one_indexs_rounds_never_delete_the_parts_of_the_others(tmp_path: Path, redis_url: str) -> None:
    """Both indexes' snapshots hold files of zeros (no entry expires): the same parts."""
    from _helpers import bow_options, generator

    upstream = answers()
    semantic = bow_options(snapshot_rows=5, snapshot_dir=str(tmp_path / "host-a"))
    vision = VisionOptions(snapshot_rows=4, snapshot_dir=str(tmp_path / "host-a"))
    with Cache("ns", redis_url=redis_url, semantic=semantic, vision=vision) as cache:
        fill_and_write(cache, upstream)
        generate = generator(cache, Upstream())
        rounds = cache._lookup.semantic.rounds
        for block in range(4):  # the third and fourth rounds delete the parts of the first two
            for i in range(6 if block == 0 else 10):  # 6: its expiry file is the perceptual one's
                generate(prompt=f"a lighthouse number {block * 10 + i} at dusk")
            rounds.settle()
            rounds.read_feed()
            rounds.check()
    calls = upstream.calls
    with worker(tmp_path, "b", redis_url) as reader:
        describer(reader, upstream)(copy_of(3), "what is in this picture?")
        matcher = reader._lookup.perceptual
        assert matcher is not None and matcher.index.snapshot is not None  # fetched whole from Redis
        assert upstream.calls == calls


# --- found by a third review --------------------------------------------------------------------


def test_a_key_with_a_row_in_two_scopes_is_removed_from_the_one_named(tmp_path: Path) -> None:
    """After a change of scope ids one request key may have a row in each."""
    rng = np.random.default_rng(RNG_SEED)
    (phash,) = random_hashes(rng, 1)
    index = PerceptualIndex()
    for number in (1, 2):
        index.add_many(scope(number), [(key(0, 0), phash, 0.0)])
    worker = PerceptualIndex()
    worker.stand_on(ALL, written(index, tmp_path / "snap"), "1-0")
    assert worker.remove(scope(2), key(0, 0))
    assert worker.search(scope(2), phash, 0) == [] and worker.search(scope(1), phash, 0) == [(key(0, 0), 0)]


def test_removals_of_one_key_in_two_scopes_are_both_remembered(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    (phash,) = random_hashes(rng, 1)
    index = PerceptualIndex()
    for number in (1, 2):
        index.add_many(scope(number), [(key(0, 0), phash, 0.0)])
    before = written(index, tmp_path / "before")  # as of 10-0
    worker = PerceptualIndex()
    worker.stand_on(ALL, before, "10-0")
    worker.remove(scope(1), key(0, 0), read_at="11-0")
    worker.remove(scope(2), key(0, 0), read_at="12-0")
    worker.stand_on(ALL, before, "10-0")  # a round that predates both removals
    assert worker.search(scope(1), phash, 0) == [] and worker.search(scope(2), phash, 0) == []


def test_a_removal_that_removed_nothing_here_is_not_remembered(tmp_path: Path) -> None:
    index = PerceptualIndex()
    assert not index.remove(scope(1), key(1, 0))
    assert (scope(1), key(1, 0)) not in index._removed
    assert not index.removals_lost_after("0-0")


def test_a_snapshot_older_than_a_forgotten_removal_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the oldest removals are forgotten: standing on a snapshot as of a
    position before them would bring their entries back, so the rounds start over instead."""
    from imgcache.match import rounds as rounds_module

    monkeypatch.setattr(rounds_module, "MAX_REMEMBERED_REMOVALS", 3)
    rng = np.random.default_rng(RNG_SEED)
    hashes = random_hashes(rng, 5)
    index = PerceptualIndex()
    index.add_many(scope(1), [(key(1, row), h, 0.0) for row, h in enumerate(hashes)])
    index.stand_on(ALL, written(index, tmp_path / "snap"), "10-0")
    for row in range(4):
        index.remove(scope(1), key(1, row), read_at=f"{11 + row}-0")
    assert index.removals_lost_after("10-0") and not index.removals_lost_after("11-0")
    index.remove(scope(1), key(1, 4))  # made here: its position is not known yet
    for row in range(5, 9):  # forgotten too, in turn, behind it
        index.remove(scope(1), key(1, row), read_at=f"{20 + row}-0")
    assert index.removals_lost_after("100-0")  # a forgotten local removal may be in no round yet


def test_a_removal_read_from_a_fallback_feed_has_no_position(tmp_path: Path) -> None:
    """While Redis is down the feed is read from the directory: byte offsets, which do not
    compare with the Redis stream ids rounds are written as of."""
    from imgcache.store.feed import SharedFeed
    from imgcache.testing import RedisServer, wait_until

    seen: list[str | None] = []
    with RedisServer() as own, Cache("ns", redis_url=own.url, directory=tmp_path / "store") as cache:
        feed = SharedFeed(cache.store, "ns", "perceptual", max_entries=100, sync_interval=0.0)

        def handle(records: list[bytes]) -> int:
            seen.append(feed.reading_to)
            return len(records)

        feed.append([b"{}"])
        assert feed.sync(handle, force=True) == 1
        own.kill()

        def on_the_directory() -> bool:
            feed.append([b"{}"])
            feed.sync(handle, force=True)
            return cache.store.feed_tier() is not cache.store.home_feed_tier()

        assert wait_until(on_the_directory, timeout=20)
        feed.append([b"{}"])
        feed.sync(handle, force=True)
    assert seen[0] is not None and seen[-1] is None


def test_a_worker_that_forgot_removals_starts_over_on_the_next_round(tmp_path: Path, redis_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Its removals outnumbered what it remembers, and one it forgot came after the newer
    round: standing on that round over its index would bring the entry back, so it clears
    its index and reads the feed after the round again."""
    from imgcache.match import rounds as rounds_module

    monkeypatch.setattr(rounds_module, "MAX_REMEMBERED_REMOVALS", 2)
    upstream = answers()
    question = "what is in this picture?"
    with worker(tmp_path, "a", redis_url) as writer, worker(tmp_path, "b", redis_url) as reader:
        describe = fill_and_write(writer, upstream)
        ask = describer(reader, upstream)
        ask(copy_of(5), question)  # stands on the first round
        matcher = reader._lookup.perceptual
        assert matcher is not None and matcher.rounds.standing is not None
        for i in range(6, 10):
            describe(picture(i), question)
        write_round(writer)  # the second round holds pictures 0-2
        newest = writer._lookup.perceptual.rounds.standing
        for i in range(3):
            describe.invalidate(picture(i), question)
        for i in range(3):  # each found gone here, its removal record read back: the first is forgotten
            ask(copy_of(i), question)
            matcher.sync(force=True)
        assert matcher.index.removals_lost_after(newest.position)
        matcher.rounds.check()
        matcher.sync(force=True)
        assert matcher.rounds.standing == newest

        def proposed(i: int) -> set[str]:
            scope_id = matcher.scope_id(_request(reader, copy_of(i), question))
            return {key for key, _ in matcher.index.search(scope_id, _phash(copy_of(i)), 10)}

        assert describe.cache_key(picture(3), question) in proposed(3)
        assert not any(describe.cache_key(picture(i), question) in proposed(i) for i in range(3))
        calls = upstream.calls
        for i in (3, 4, 6, 7):
            ask(copy_of(i), question)
        assert upstream.calls == calls  # the round answers


def _request(cache: Cache, image: bytes, prompt: str) -> Any:
    from imgcache import Request
    from imgcache.images import image_input

    return Request.build("vision", "describe", prompt, {}, (image_input(image, cache.vision_options),))


def _phash(image: bytes) -> int:
    from imgcache.match.perceptual.fingerprint import fingerprint

    return fingerprint(image).phash
