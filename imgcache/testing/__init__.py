"""Helpers for testing code that uses imgcache: real servers on free loopback ports."""

from .servers import RedisClusterServers, RedisServer, S3Server, free_port

__all__ = ["RedisClusterServers", "RedisServer", "S3Server", "free_port"]
