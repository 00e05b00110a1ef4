"""Helpers for testing code that uses imgcache.

* :class:`FakeOpenAI`: a local stand-in for the OpenAI HTTP API (images, chat, responses,
  models) with fault injection, for the real ``openai`` SDK to talk to in tests; with it
  :func:`fake_png` (a PNG from a seed), :func:`image_digest` (how its answers name an input
  image), :class:`FormFile`, :class:`RecordedRequest` and ``MAX_IMAGE_BYTES``
  (see :mod:`imgcache.testing.openai`);
* :class:`RedisServer`, :class:`RedisClusterServers`, :class:`S3Server`: real servers
  (``redis-server``, moto's S3) on free loopback ports, with ``kill()`` and ``restart()``
  for fault tests;
* :func:`wait_until`: poll a condition (a background write, a breaker's probe, another process)
  with a deadline.

Names are imported on first use, so ``import imgcache.testing`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

__all__ = [
    "MAX_IMAGE_BYTES",
    "FakeOpenAI",
    "FormFile",
    "RecordedRequest",
    "RedisClusterServers",
    "RedisServer",
    "S3Server",
    "fake_png",
    "free_port",
    "image_digest",
    "wait_until",
]

_LAZY = {
    **dict.fromkeys(
        ["MAX_IMAGE_BYTES", "FakeOpenAI", "FormFile", "RecordedRequest", "fake_png", "image_digest"],
        "imgcache.testing.openai",
    ),
    **dict.fromkeys(
        ["RedisClusterServers", "RedisServer", "S3Server", "free_port", "wait_until"],
        "imgcache.testing.servers",
    ),
}

if TYPE_CHECKING:
    from .openai import (
        MAX_IMAGE_BYTES,
        FakeOpenAI,
        FormFile,
        RecordedRequest,
        fake_png,
        image_digest,
    )
    from .servers import RedisClusterServers, RedisServer, S3Server, free_port, wait_until


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
