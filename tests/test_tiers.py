"""One contract suite for every storage tier, run against real servers.

The ``tier`` fixture is parametrised over all tiers; tests of a capability only some tiers
have (TTL, counters, locks) narrow it with ``@pytest.mark.parametrize(..., indirect=True)``.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgcache.errors import TierError, TierTimeout, TierUnavailable
from imgcache.store.base import MISSING, BaseTier, blob_key, entry_key
from imgcache.store.disk import DiskTier
from imgcache.store.memory import MemoryTier
from imgcache.store.redis import RedisTier
from imgcache.store.s3 import S3Tier
from imgcache.testing import RedisServer, S3Server, free_port
from imgcache.testing.tier_contract import NARROW, checks_for

ALL = ["memory", "disk", "redis", "redis-cluster", "s3"]
EXPIRING = ["memory", "redis", "redis-cluster"]
LOCKING = ["redis", "redis-cluster"]
MAPPING = ["disk", "redis", "redis-cluster", "s3"]  # map logical keys; memory keeps them opaque

MiB = 1 << 20


def new_id() -> str:
    return secrets.token_hex(32)


def ekey(namespace: str = "ns") -> str:
    return entry_key(namespace, new_id())


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; the caller asserts the result."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def make_tier(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if kind == "memory":
        return MemoryTier(max_bytes=64 * MiB)
    if kind == "disk":
        return DiskTier(tmp_path / "cache")
    if kind == "redis":
        return RedisTier(request.getfixturevalue("redis_url"))
    if kind == "redis-cluster":
        return RedisTier(request.getfixturevalue("redis_cluster_url"))
    if kind == "s3":
        endpoint_url, bucket = request.getfixturevalue("s3_bucket")
        return S3Tier(bucket, endpoint_url=endpoint_url)
    raise AssertionError(kind)


@pytest.fixture(params=ALL)
def tier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    # Servers are requested lazily, so `-k memory` starts none of them.
    tier = make_tier(request.param, request, tmp_path)
    yield tier
    tier.close()


# --- the contract ----------------------------------------------------------------------


def test_identity(tier: BaseTier) -> None:
    assert tier.name in ("memory", "disk", "redis", "s3")
    assert tier.scope == {"memory": "process", "disk": "host"}.get(tier.name, "fleet")


TYPES = {"memory": MemoryTier, "disk": DiskTier, "redis": RedisTier, "redis-cluster": RedisTier, "s3": S3Tier}
CONTRACT = [pytest.param(kind, check, id=f"{kind}-{check.__name__}")
            for kind in ALL for check in checks_for(TYPES[kind])]


@pytest.mark.parametrize(("tier", "check"), CONTRACT, indirect=["tier"])
def test_contract(tier: BaseTier, check: Callable[[Any], None]) -> None:
    """The contract imgcache.testing ships for anyone writing a tier: the narrow protocol and
    each capability the tier declares (counters, feeds, mutexes, URLs, secrets, claims, scan)."""
    check(tier)


def test_every_tier_declares_the_capabilities_the_store_relies_on() -> None:
    declared = {kind: [c.__name__ for c in checks_for(TYPES[kind])][len(NARROW):] for kind in ("memory", "disk", "redis", "s3")}
    assert declared == {
        "memory": [],
        "disk": ["shared_counters", "shared_feeds", "blob_urls", "secrets_are_kept", "scannable", "leases"],
        "redis": ["shared_counters", "shared_feeds", "mutexes", "secrets_are_kept", "leases", "rate_buckets"],
        "s3": ["blob_urls"],
    }


@pytest.mark.parametrize("tier", MAPPING, indirect=True)
def test_rejects_non_logical_keys(tier: BaseTier) -> None:
    with pytest.raises(ValueError):
        tier.get("ns/x/" + new_id())
    with pytest.raises(ValueError):
        tier.set("ns/e/not-hex", b"value")


# --- capabilities ----------------------------------------------------------------------


@pytest.mark.parametrize("tier", EXPIRING, indirect=True)
def test_ttl_expires(tier: BaseTier) -> None:
    short, lasting = ekey(), ekey()
    tier.set(short, b"brief", ttl=0.05)
    tier.set(lasting, b"stays", ttl=60)
    assert eventually(lambda: tier.get(short) is MISSING)
    assert tier.get(lasting) == b"stays"


@pytest.mark.parametrize("tier", LOCKING, indirect=True)
def test_redis_key_layout(tier: RedisTier) -> None:
    ident = new_id()
    tier.set(entry_key("ns", ident), b"entry")
    assert tier.client.get(f"imgcache:ns:e:{{{ident}}}") == b"entry"
    assert tier.mutex(entry_key("ns", ident), 5).name == f"imgcache:ns:lock:{{{ident}}}"


@pytest.mark.parametrize("tier", LOCKING, indirect=True)
def test_mutex_excludes_and_releases_from_another_thread(tier: RedisTier) -> None:
    key = ekey()
    first, second = tier.mutex(key, timeout=10), tier.mutex(key, timeout=10)
    assert first.acquire(blocking=False)
    assert not second.acquire(blocking=False)
    releaser = threading.Thread(target=first.release)  # thread_local=False allows this
    releaser.start()
    releaser.join()
    assert second.acquire(blocking=False)
    second.release()


def test_mutex_is_for_entry_keys(redis_url: str) -> None:
    with pytest.raises(ValueError):
        RedisTier(redis_url).mutex(blob_key("ns", new_id()), 5)


def test_disk_layout_and_path_for(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "cache")
    ident = new_id()
    key = entry_key("ns", ident)
    assert not (tmp_path / "cache").exists()  # created on first write, not by the constructor
    tier.set(key, b"entry", ttl=0.001)  # ttl is ignored by this tier
    path = tmp_path / "cache" / "ns" / "e" / ident[:2] / ident
    assert tier.path_for(key) == path
    assert path.read_bytes() == b"entry"
    time.sleep(0.01)
    assert tier.get(key) == b"entry"
    assert [p.name for p in path.parent.iterdir()] == [ident]  # no temp files left behind


def test_memory_evicts_least_recently_used() -> None:
    value = b"x" * 1000
    a, b, c, d = (ekey() for _ in range(4))
    probe = MemoryTier(max_bytes=10 * MiB)
    probe.set(a, value)
    one = probe.size_bytes

    tier = MemoryTier(max_bytes=3 * one)
    for key in (a, b, c):
        tier.set(key, value)
    assert tier.get(a) == value  # a becomes most recently used, so b is now the oldest
    tier.set(d, value)
    assert tier.get(b) is MISSING
    assert [tier.get(key) for key in (a, c, d)] == [value, value, value]
    assert tier.size_bytes <= tier.max_bytes


def test_memory_refuses_value_larger_than_budget() -> None:
    tier = MemoryTier(max_bytes=4096)
    key, kept = ekey(), ekey()
    tier.set(kept, b"small")
    tier.set(key, b"old")
    tier.set(key, b"x" * 5000)
    assert tier.get(key) is MISSING  # neither the large value nor the stale old one
    assert tier.get(kept) == b"small"


# --- faults ----------------------------------------------------------------------------


@pytest.mark.slow  # a redis-server of its own
def test_redis_recovers_after_server_restart() -> None:
    with RedisServer() as server:
        tier = RedisTier(server.url)
        key = ekey()
        tier.set(key, b"before")
        server.kill()
        with pytest.raises(TierError):
            tier.get(key)
        with pytest.raises(TierError):
            tier.set(key, b"during")
        server.restart()
        assert tier.get(key) is MISSING  # no persistence: the restarted server is empty
        tier.set(key, b"after")
        assert tier.get(key) == b"after"
        tier.ping()


@pytest.mark.slow  # a redis-server of its own
def test_redis_constructed_while_down_fails_on_use_then_connects() -> None:
    server = RedisServer(port=free_port())
    tier = RedisTier(server.url)  # nothing listens yet: no error here
    with pytest.raises(TierError):
        tier.get(ekey())
    with pytest.raises(TierError):
        tier.ping()
    with server:
        key = ekey()
        tier.set(key, b"late")
        assert tier.get(key) == b"late"
        assert not tier.is_cluster


def test_redis_cluster_is_detected(redis_cluster_url: str) -> None:
    tier = RedisTier(redis_cluster_url)
    assert tier.is_cluster
    keys = [ekey() for _ in range(20)]  # spread over many slots, so over all nodes
    stored = set(keys[::2])
    for key in stored:
        tier.set(key, key.encode())
    assert tier.get_many(keys) == [key.encode() if key in stored else MISSING for key in keys]


@pytest.mark.slow  # a moto S3 server of its own
def test_s3_recovers_after_server_restart() -> None:
    with S3Server() as server:
        server.create_bucket("faults")
        tier = S3Tier("faults", endpoint_url=server.endpoint_url)
        key = ekey()
        tier.set(key, b"before")
        server.kill()
        with pytest.raises(TierError):
            tier.get(key)
        with pytest.raises(TierError):
            tier.ping()
        server.restart()
        server.create_bucket("faults")  # moto keeps buckets in memory only
        assert tier.get(key) is MISSING
        tier.set(key, b"after")
        assert tier.get(key) == b"after"
        tier.ping()


def test_s3_missing_bucket_is_unavailable(s3_server: S3Server) -> None:
    tier = S3Tier(f"absent-{new_id()[:12]}", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(TierUnavailable):
        tier.get(ekey())
    with pytest.raises(TierUnavailable):
        tier.ping()


def test_s3_presigned_url_serves_the_object(s3_bucket: tuple[str, str]) -> None:
    import urllib.request

    endpoint_url, bucket = s3_bucket
    tier = S3Tier(bucket, endpoint_url=endpoint_url)
    key = blob_key("ns", new_id())
    tier.set(key, b"image bytes")
    url = tier.presigned_url(key, expires_in=10**9)  # clamped to 7 days, not refused
    assert url.startswith(endpoint_url)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"image bytes"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener completes TCP handshakes (the kernel does) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


SILENT_TIERS: dict[str, Callable[[int], Any]] = {
    "redis": lambda port: RedisTier(f"redis://127.0.0.1:{port}/0", socket_timeout=0.1),
    "s3": lambda port: S3Tier("bucket", endpoint_url=f"http://127.0.0.1:{port}", read_timeout=0.1),
}


@pytest.mark.parametrize("connect", list(SILENT_TIERS.values()), ids=list(SILENT_TIERS))
def test_silent_server_times_out(silent_port: int, connect: Callable[[int], Any]) -> None:
    tier = connect(silent_port)
    with pytest.raises(TierTimeout):
        tier.get(ekey())


def test_disk_unwritable_root_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    tier = DiskTier(blocker / "cache")  # a path under a regular file: unwritable even for root
    key = ekey()
    with pytest.raises(TierUnavailable):
        tier.set(key, b"value")
    with pytest.raises(TierUnavailable):
        tier.get(key)
    with pytest.raises(TierUnavailable):
        tier.add_counters("ns", {"hits": 1})
    with pytest.raises(TierUnavailable):
        tier.ping()
