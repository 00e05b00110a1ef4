"""Fetching a remote image: one guarded GET under one deadline.

Whoever names a URL decides where this process connects, so the policy (:class:`FetchPolicy`)
says who may be reached. The library's own caller is trusted (any address); the proxy's callers
are strangers: their URLs may reach public addresses only, plus what the operator allows.

* **Every address is checked where the connection is made.** The host is resolved once, every
  address it resolves to must be allowed (one private address refuses the URL), and the
  connection goes to an address that was checked, so a DNS answer that changes between the
  check and the connection (rebinding) cannot reach anything else. Each redirect is a new
  connection and is checked again; redirects are bounded.
* **One deadline for everything** (resolution, connection, headers, redirects, body): the fetch
  runs as a coroutine cancelled at the deadline, so a server that trickles its headers a byte a
  second costs ``timeout`` seconds, not hours. Callers of :func:`fetch_image` wait on a private event
  loop thread and are released at the deadline.
* **Bounded work**: at most ``max_bytes`` are read (a larger declared length is refused before
  the body), at most :data:`MAX_CONCURRENT` fetches run at once in a process.

httpcore (httpx's transport) does the HTTP; a network backend of its own (:class:`_CheckedBackend`)
does the checking, so no request bypasses it. No proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, ImageError, SourceRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_CONCURRENT = 16
"""Fetches in flight in one process; more wait for a slot (or, with ``queue=False``, fail)."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*")


@dataclass(frozen=True)
class FetchPolicy:
    """Who a fetch may reach."""

    private: bool = True
    """Reach any address (a trusted caller); False: public addresses only, plus ``allow``."""
    allow: tuple[str, ...] = ()
    """What may be reached beyond public addresses: networks (``10.1.0.0/16``, ``fd00::/8``,
    an address) and host names (``images.internal``, ``*.corp.example``)."""
    max_redirects: int = 5
    queue: bool = True
    """Wait for a free fetch slot (within the deadline); False: fail at once when all are busy
    (a proxy's worker thread is never spent waiting for one)."""
    _networks: tuple[IPNetwork, ...] = field(default=(), init=False, repr=False, compare=False)
    _hosts: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks, hosts = [], []
        for entry in self.allow:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.strip().lower().rstrip(".")
            if not _HOST_NAME.fullmatch(name):
                raise ConfigError(f"fetch allow-list entry {entry!r} is neither a network nor a host name")
            hosts.append(name)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_hosts", tuple(hosts))

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` (a name) is on the allow-list: then any address it has may be reached."""
        host = host.lower().rstrip(".")
        return any(host == name or (name.startswith("*.") and host.endswith(name[1:]))
                   for name in self._hosts)

    def address_allowed(self, address: IPAddress) -> bool:
        return self.private or is_public(address) or any(address in net for net in self._networks
                                                         if net.version == address.version)


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address; an IPv6 address that embeds an IPv4 one (mapped,
    6to4, NAT64, Teredo) is as public as the address it embeds."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_private
                                       or address.is_loopback or address.is_link_local
                                       or address.is_unspecified)


TRUSTED = FetchPolicy()
"""The library's policy: its caller chose the URL."""


class _CheckedBackend:
    """httpcore's network backend, checking every address before connecting to it."""

    def __init__(self, policy: FetchPolicy) -> None:
        import httpcore

        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Iterable[Any] | None = None) -> Any:
        import httpcore

        addresses = await self._addresses(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]").split("%")[0])
        except ValueError:
            literal = None
        if literal is not None:
            found = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ImageError(f"cannot resolve {host!r}: {exc}") from exc
            found = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if literal is None and self.policy.host_allowed(host):
            return found
        refused = [str(a) for a in found if not self.policy.address_allowed(a)]
        if refused or not found:
            raise SourceRefused(f"image URL host {host!r} is not a public address"
                               f"{' (' + ', '.join(refused[:3]) + ')' if refused else ''}; this server "
                               "does not fetch it")
        return found

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise SourceRefused("image URLs cannot name a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def check_url(url: str) -> Any:
    """The parsed ``httpx.URL`` of an http(s) URL with a host; SourceRefused otherwise."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise SourceRefused(f"not a valid image URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SourceRefused("an image URL must be an http(s) URL with a host")
    return parsed


def fetch_image(url: str, *, policy: FetchPolicy = TRUSTED, max_bytes: int, timeout: float) -> bytes:
    """GET ``url`` within ``timeout`` seconds in all, reading at most ``max_bytes``. Any thread
    may call it (an event loop's included): the fetch runs on this module's event loop thread,
    and the caller is released at the deadline.

    SourceRefused when the policy refuses the URL or an address on the way (the request is
    bad); ImageError for every other failure (the image is unreadable)."""
    check_url(url)
    return _loop().run(url, policy, max_bytes, timeout)


async def _get(url: str, policy: FetchPolicy, max_bytes: int, timeout: float) -> bytes:
    import httpcore

    headers = [(b"accept", b"image/*"), (b"accept-encoding", b"identity"), (b"user-agent", b"imgcache")]
    limits = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
    async with httpcore.AsyncConnectionPool(network_backend=_CheckedBackend(policy), retries=0) as pool:
        for _ in range(policy.max_redirects + 1):
            target = check_url(url)
            try:
                async with pool.stream("GET", str(target), headers=headers, extensions=limits) as response:
                    location = _header(response.headers, b"location")
                    if response.status in _REDIRECTS and location is not None:
                        url = str(target.join(location.decode("latin-1")))
                        continue
                    if not 200 <= response.status < 300:
                        raise ImageError(f"the image at {_short(url)} answered {response.status}")
                    declared = _header(response.headers, b"content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        raise ImageError(f"the image at {_short(url)} is {int(declared):,} bytes, "
                                         f"over {max_bytes:,}")
                    return await _body(response, url, max_bytes)
            except httpcore.TimeoutException as exc:
                raise ImageError(f"fetching the image at {_short(url)} timed out: {exc!r}") from exc
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
                raise ImageError(f"cannot fetch the image at {_short(url)}: {exc!r}") from exc
    raise ImageError(f"the image at {_short(url)} redirected more than {policy.max_redirects} times")


async def _body(response: Any, url: str, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_stream():
        size += len(chunk)
        if size > max_bytes:
            raise ImageError(f"the image at {_short(url)} is over {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _short(url: str) -> str:
    return url[:80]


class _Loop:
    """An event loop on a daemon thread, where every fetch of the process runs, and the slots
    that bound how many run at once."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.slots = asyncio.Semaphore(MAX_CONCURRENT)  # only touched on the loop's thread
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="imgcache-fetch", daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def run(self, url: str, policy: FetchPolicy, max_bytes: int, timeout: float) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._fetch(url, policy, max_bytes, timeout), self.loop)
        try:
            return future.result(timeout + 1.0)  # the coroutine keeps the deadline; this is a backstop
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ImageError(f"fetching the image at {_short(url)} took over {timeout:g} s") from None

    async def _fetch(self, url: str, policy: FetchPolicy, max_bytes: int, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            if not self.slots.locked():
                await self.slots.acquire()  # free: taken without yielding, so none slips in between
            elif policy.queue:
                await asyncio.wait_for(self.slots.acquire(), timeout)
            else:
                raise ImageError(f"too many image fetches in flight ({MAX_CONCURRENT}); not fetched")
        except asyncio.TimeoutError:
            raise ImageError(f"no free fetch slot within {timeout:g} s ({MAX_CONCURRENT} in flight)") from None
        try:
            return await asyncio.wait_for(_get(url, policy, max_bytes, timeout),
                                          max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ImageError(f"fetching the image at {_short(url)} took over {timeout:g} s") from None
        finally:
            self.slots.release()


_loop_lock = threading.Lock()
_shared_loop: _Loop | None = None


def _loop() -> _Loop:
    global _shared_loop
    with _loop_lock:
        if _shared_loop is None or not _shared_loop.thread.is_alive():
            _shared_loop = _Loop()
        return _shared_loop
