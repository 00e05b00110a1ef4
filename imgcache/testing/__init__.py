"""Helpers for testing code that uses imgcache.

* :class:`FakeOpenAI`: a local stand-in for the OpenAI HTTP API (images, chat, models) with
  fault injection, for the real ``openai`` SDK to talk to in tests;
* :class:`RedisServer`, :class:`RedisClusterServers`, :class:`S3Server`: real servers
  (``redis-server``, moto's S3) on free loopback ports, with ``kill()`` and ``restart()``
  for fault tests;
* :func:`wait_until`: poll a condition (a background write, a breaker's probe, another process)
  with a deadline.
"""

from .openai_server import FakeOpenAI
from .servers import RedisClusterServers, RedisServer, S3Server, free_port, wait_until

__all__ = ["FakeOpenAI", "RedisClusterServers", "RedisServer", "S3Server", "free_port", "wait_until"]
