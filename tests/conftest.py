"""Shared fixtures: real servers started once per session, handed out clean per test.

Servers start lazily: a run that uses no Redis never launches redis-server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imgcache.testing import RedisClusterServers, RedisServer, S3Server
from imgcache.testing.openai_server import FakeOpenAI

# Dummy AWS credentials before anything creates a boto3 client, so that no test can ever
# reach a real account with the developer's own credentials.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
for _name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)


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
