"""Shared fixtures: real servers started once per session, handed out clean per test; caches
on a fresh directory (``make_cache``, ``cache``); the ``slow`` rule.

Servers start lazily: a run that uses no Redis never launches redis-server.

``pytest -m "not slow"`` runs the fast unit tests only. A test is marked ``slow`` here when
it uses a server process or the real model (``SLOW_FIXTURES``, directly or through another
fixture), is parametrized with storage on a server (``SERVER_PARAMS``), or uses the default
``cache`` (whose lookups load the model); tests slow for another reason (a CLI or proxy
process, a server of their own, seconds of work) are marked by hand, whole modules with
``pytestmark``. Helpers that are not fixtures are in ``_helpers.py``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgcache import Cache
from imgcache.testing import FakeOpenAI, RedisClusterServers, RedisServer, S3Server

# Dummy AWS credentials before anything creates a boto3 client, so that no test can ever
# reach a real account with the developer's own credentials.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
for _name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)


# --- the slow rule -----------------------------------------------------------------------------


SLOW_FIXTURES = frozenset({
    "redis_server", "redis_cluster", "s3_server", "own_redis", "own_s3",  # server processes
    "fake_openai",  # a server thread and the real openai SDK per test: 0.3-1 s a test
    "model",  # test_semantic's real sentence-transformers model
})
SERVER_PARAMS = frozenset({"redis", "redis-cluster", "cluster", "s3"})
"""Parameter values naming storage on a server: a test (or fixture) parametrized with one asks
for the server's fixture at run time (``request.getfixturevalue``), out of sight of the rule."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that uses a fixture of ``SLOW_FIXTURES`` (its own or one its
    fixtures need), has a parameter in ``SERVER_PARAMS``, or uses ``cache`` with no
    ``cache_options``: the library's default Cache, whose lookups load the model."""
    slow = pytest.mark.slow
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        fixtures = getattr(item, "fixturenames", ())
        if (SLOW_FIXTURES.intersection(fixtures)
                or any(isinstance(value, str) and value in SERVER_PARAMS for value in params)
                or ("cache" in fixtures and item.get_closest_marker("cache_options") is None)):
            item.add_marker(slow)


# --- Redis -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis server, emptied for this test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> str:
    """URL of a node of the session's Redis Cluster, every node emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture(params=[pytest.param("single", marks=pytest.mark.slow), "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """A single Redis server or a Redis Cluster, emptied for this test."""
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, for a test that kills it."""
    with RedisServer() as server:
        yield server


# --- S3 (moto) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> tuple[str, str]:
    """``(endpoint_url, bucket)`` for a new, empty bucket."""
    bucket = f"imgcache-test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(bucket)
    return s3_server.endpoint_url, bucket


# --- OpenAI (the real SDK against a local fake server) ---------------------------------


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh FakeOpenAI server answering 32x32 images, stopped after the test."""
    with FakeOpenAI(image_size=(32, 32)) as fake:
        yield fake


@pytest.fixture
def openai_client(fake_openai: FakeOpenAI) -> Iterator[Any]:
    """The real ``openai.OpenAI`` client pointed at ``fake_openai``, without retries."""
    import openai

    with openai.OpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0) as client:
        yield client


# --- caches ------------------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """The directory of the caches ``make_cache`` and ``cache`` make (not created here)."""
    return tmp_path / "cache"


@pytest.fixture
def make_cache(cache_dir: Path) -> Iterator[Callable[..., Cache]]:
    """``make_cache(namespace="test", **options)``: a ``Cache`` closed after the test, on
    ``cache_dir`` unless ``options`` say where it keeps its entries."""
    made: list[Cache] = []

    def make(namespace: str = "test", **options: Any) -> Cache:
        if not {"directory", "redis_url", "s3_bucket"} & options.keys():
            options["directory"] = cache_dir
        made.append(Cache(namespace, **options))
        return made[-1]

    yield make
    for cache in reversed(made):
        cache.close()


@pytest.fixture
def cache(request: pytest.FixtureRequest, make_cache: Callable[..., Cache]) -> Cache:
    """``make_cache(*args, **kwargs)`` with the arguments of the closest ``cache_options``
    marker: a module sets its own with ``pytestmark = pytest.mark.cache_options("vision",
    semantic=False)``, a test overrides it with a decorator of its own."""
    marker = request.node.get_closest_marker("cache_options")
    return make_cache(*marker.args, **marker.kwargs) if marker else make_cache()


@pytest.fixture(params=["redis", "directory"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Cache options under which cache objects (and processes) share entries and the feeds:
    the session's Redis, or a directory."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {"directory": tmp_path / "shared"}


# --- processes ---------------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts; any still running at the end are killed (by their pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()
