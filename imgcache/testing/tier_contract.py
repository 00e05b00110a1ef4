"""The storage tier contract, for anyone writing a tier: the narrow get/set/delete protocol
every tier keeps, and a check for each capability a tier declares (see
:mod:`imgcache.store.base`). imgcache runs it against its own tiers on real servers.

    from imgcache.testing.tier_contract import checks_for

    @pytest.mark.parametrize("check", checks_for(MyTier), ids=lambda c: c.__name__)
    def test_my_tier(check, my_tier):
        check(my_tier)

A check takes a fresh, empty tier and raises AssertionError when the tier breaks the
contract. Checks write under random namespaces and ids, so a shared server may be reused.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ..store.base import (
    BLOB,
    ENTRY,
    MISSING,
    BlobUrls,
    Leases,
    Mutexes,
    RateBuckets,
    Scannable,
    Secrets,
    SharedCounters,
    SharedFeeds,
    blob_key,
    entry_key,
)

Check = Callable[[Any], None]


def _namespace() -> str:
    return "contract-" + secrets.token_hex(4)


def _id() -> str:
    return secrets.token_hex(32)


# -- the narrow protocol: every tier ---------------------------------------------------------


def round_trip(tier: Any) -> None:
    for value in (bytes(range(256)), b"", bytes(range(256)) * 4096):
        key = entry_key(_namespace(), _id())
        tier.set(key, value)
        assert tier.get(key) == value


def absent_is_missing(tier: Any) -> None:
    assert tier.get(entry_key(_namespace(), _id())) is MISSING


def overwrite_and_delete(tier: Any) -> None:
    key = entry_key(_namespace(), _id())
    tier.set(key, b"one")
    tier.set(key, b"two")
    assert tier.get(key) == b"two"
    tier.delete(key)
    assert tier.get(key) is MISSING
    tier.delete(key)  # deleting what is absent is not an error


def get_many_keeps_order_with_holes(tier: Any) -> None:
    namespace = _namespace()
    keys = [blob_key(namespace, _id()) for _ in range(5)]
    for index in (0, 2, 4):
        tier.set(keys[index], b"v%d" % index)
    assert tier.get_many(keys) == [b"v0", MISSING, b"v2", MISSING, b"v4"]


def namespaces_and_kinds_do_not_collide(tier: Any) -> None:
    ident = _id()
    one, two = _namespace(), _namespace()
    tier.set(entry_key(one, ident), b"entry of one")
    tier.set(entry_key(two, ident), b"entry of two")
    tier.set(blob_key(one, ident), b"blob of one")
    assert tier.get(entry_key(one, ident)) == b"entry of one"
    assert tier.get(entry_key(two, ident)) == b"entry of two"
    assert tier.get(blob_key(one, ident)) == b"blob of one"


# -- capabilities: for the tiers that declare them ---------------------------------------------


def shared_counters(tier: SharedCounters) -> None:
    one, two = _namespace(), _namespace()
    tier.add_counters(one, {"hits": 2, "saved_usd": 0.5})
    tier.add_counters(one, {"hits": 1})
    tier.add_counters(two, {"hits": 7})
    assert tier.read_counters(one) == {"hits": 3.0, "saved_usd": 0.5}
    assert {one, two} <= tier.counter_namespaces(limit=10_000)

    threads = [threading.Thread(target=lambda: [tier.add_counters(one, {"n": 1}) for _ in range(20)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert tier.read_counters(one)["n"] == 80  # concurrent adds are not lost


def shared_feeds(tier: SharedFeeds) -> None:
    namespace = _namespace()
    tier.append_records(namespace, "feed", [b"r1", b"r2"], 1000)
    first, cursor = tier.read_records(namespace, "feed", None)
    assert first == [b"r1", b"r2"]
    tier.append_records(namespace, "feed", [b"r3"], 1000)
    later, _ = tier.read_records(namespace, "feed", cursor)
    assert later == [b"r3"]  # a cursor reads on from where it was
    for index in range(5):
        tier.push_recent(namespace, "recent", b"%d" % index, 3)
    assert tier.read_recent(namespace, "recent") == [b"4", b"3", b"2"]  # newest first, kept short
    for index in range(3):
        tier.append_log(namespace, "log", b"line %d" % index, max_records=1000, max_bytes=1 << 20)
    assert tier.read_log(namespace, "log") == [b"line 0", b"line 1", b"line 2"]
    assert tier.read_log(_namespace(), "log") == []


def mutexes(tier: Mutexes) -> None:
    key = entry_key(_namespace(), _id())
    lock = tier.try_mutex(key, 5.0)
    assert lock is not None
    assert tier.try_mutex(key, 5.0) is None  # held: another caller does not get it
    lock.extend(5.0)
    released = threading.Thread(target=lock.release)  # another thread may release it
    released.start()
    released.join(10)
    again = tier.try_mutex(key, 5.0)
    assert again is not None
    again.release()


def blob_urls(tier: BlobUrls) -> None:
    data = secrets.token_bytes(64)
    key = blob_key(_namespace(), _id())
    url = tier.blob_url(key, data, 60)
    assert url is None or isinstance(url, str)
    if url is None:
        return
    from urllib.parse import unquote, urlsplit
    from urllib.request import urlopen

    if url.startswith("file://"):
        with open(unquote(urlsplit(url).path), "rb") as file:
            assert file.read() == data
    else:  # served over HTTP (a presigned URL): the blob's bytes, stored first if absent
        with urlopen(url, timeout=10) as answer:
            assert answer.read() == data


def secrets_are_kept(tier: Secrets) -> None:
    name = "contract-secret-" + secrets.token_hex(4)
    first, second = secrets.token_bytes(32), secrets.token_bytes(32)
    assert tier.keep_secret(name, first) == first
    assert tier.keep_secret(name, second) == first  # the first one kept is everyone's


def scannable(tier: Scannable) -> None:
    namespace = _namespace()
    ident = _id()
    tier.set(entry_key(namespace, ident), b"manifest")  # type: ignore[attr-defined]
    tier.set(blob_key(namespace, ident), b"blob")  # type: ignore[attr-defined]
    found = {(f.kind, f.name): f for f in tier.stored_files() if f.namespace == namespace}
    assert set(found) == {(ENTRY, ident), (BLOB, ident)}
    entry = found[ENTRY, ident]
    assert entry.size == len(b"manifest") and entry.mtime <= time.time() + 1
    assert tier.read_stored(entry) == b"manifest"
    tier.remove_stored(entry)
    assert tier.read_stored(entry) is None
    assert tier.get(entry_key(namespace, ident)) is MISSING  # type: ignore[attr-defined]


def leases(tier: Leases) -> None:
    namespace, key = _namespace(), _id()
    one = tier.claims(namespace, "contract", lease=5.0, refusal_ttl=60.0)
    two = tier.claims(namespace, "contract", lease=5.0, refusal_ttl=60.0)
    try:
        assert one.claim(key) and not two.claim(key)  # one holder at a time
        one.release(key)
        assert two.claim(key)
        one.refuse(key, "400 content_policy_violation")
        assert two.refusal(key) == "400 content_policy_violation"  # refusals are shared
        assert one.refusal(_id()) is None
    finally:
        one.close()
        two.close()


class _Rates:
    requests, images, request_capacity, image_capacity = 1.0, 0.0, 1.0, 0.0


def rate_buckets(tier: RateBuckets) -> None:
    buckets = tier.rate_buckets(_namespace(), "contract")
    first, epoch = buckets.reserve("model", _Rates(), 1, 0)
    second, _ = buckets.reserve("model", _Rates(), 1, 0)
    assert first == 0 and 0.5 < second <= 1.0  # one request a second, burst of one
    buckets.pause("model", _Rates(), 2.0)
    assert buckets.epoch("model") != epoch  # a pause starts a new epoch


NARROW: tuple[Check, ...] = (round_trip, absent_is_missing, overwrite_and_delete,
                             get_many_keeps_order_with_holes, namespaces_and_kinds_do_not_collide)
CAPABILITIES: tuple[tuple[type[Any], Check], ...] = (
    (SharedCounters, shared_counters), (SharedFeeds, shared_feeds), (Mutexes, mutexes),
    (BlobUrls, blob_urls), (Secrets, secrets_are_kept), (Scannable, scannable), (Leases, leases),
    (RateBuckets, rate_buckets),
)


def checks_for(tier_type: type[Any]) -> list[Check]:
    """The checks a tier of this type must pass: the narrow protocol, and one per capability
    its methods declare."""
    return [*NARROW, *(check for capability, check in CAPABILITIES if declares(tier_type, capability))]


def declares(tier_type: type[Any], capability: type[Any]) -> bool:
    """Whether the class has every method of the capability's protocol."""
    methods = [name for name, value in vars(capability).items() if callable(value) and not name.startswith("_")]
    return all(callable(getattr(tier_type, name, None)) for name in methods)
