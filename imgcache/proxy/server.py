"""Running the proxy: ``imgcache serve`` (:func:`serve`), and :class:`ProxyServer` for tests
and benchmarks (the app on a free loopback port in a background thread).

uvicorn serves the app (httptools and uvloop where installed). On SIGTERM or Ctrl-C it stops
accepting connections, lets the requests in flight finish (up to ``graceful_timeout``), then
the app's lifespan closes the upstream client and flushes every namespace's cache (pending
writes, stats). With ``workers > 1`` uvicorn runs that many processes on one socket; each has
its own memory tier and in-process single-flight, and they share the other tiers (and, with
Redis, single-flight through its lock). Their metrics are written to files in
``PROMETHEUS_MULTIPROC_DIR`` (a private temporary directory made for the run, unless the
operator set one), so every scrape of ``/metrics``, whichever worker answers it, sees the sums
over all of them (see :mod:`~imgcache.proxy.metrics`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .config import ProxyConfig

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..cache import Cache

CONFIG_ENV = "IMGCACHE_PROXY_CONFIG"
"""How ``serve(workers=N)`` hands the configuration to its worker processes (JSON)."""
CACHE_ENV = "IMGCACHE_PROXY_CACHE"
"""... and the cache's keyword arguments beyond the ``IMGCACHE_*`` variables (JSON)."""
LOG_LEVEL_ENV = "IMGCACHE_PROXY_LOG_LEVEL"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess mode: read by each worker when it first imports it."""

log = logging.getLogger("imgcache.proxy")


def app_from_env() -> Any:
    """The app of a worker process: configuration from :data:`CONFIG_ENV`, cache from the
    ``IMGCACHE_*`` variables and :data:`CACHE_ENV` (uvicorn's ``factory``)."""
    from ..cache import Cache
    from .app import create_app

    configure_logging(os.environ.get(LOG_LEVEL_ENV) or "info")  # a worker is a new process
    overrides = json.loads(os.environ.get(CACHE_ENV) or "{}")
    return create_app(ProxyConfig.from_json(os.environ[CONFIG_ENV]), Cache.from_env(**overrides),
                      owns_cache=True)


def _uvicorn_options(config: ProxyConfig, log_level: str, graceful_timeout: float) -> dict[str, Any]:
    return {
        "http": _http_protocol(),
        "h11_max_incomplete_event_size": config.max_header_bytes,  # the head limit, for both
        "limit_concurrency": config.max_clients,
        "log_level": log_level,
        "access_log": False,  # the app writes its own, without query strings or headers
        "server_header": False,  # relayed answers keep the upstream's own headers
        "date_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": max(1, round(graceful_timeout)),
        "timeout_keep_alive": 30,
    }


def _http_protocol() -> Any:
    """httptools with the head bounded (:mod:`~imgcache.proxy.protocol`); h11, which bounds
    it itself, where httptools is not installed."""
    try:
        from .protocol import BoundedHttpToolsProtocol
    except ImportError:
        return "h11"
    return BoundedHttpToolsProtocol


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def configure_logging(level: str = "info") -> None:
    """imgcache's log lines on stderr at ``level``; the access log (one JSON object a line,
    at INFO) on stderr whatever the level."""
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    numeric = logging.DEBUG if level.lower() == "trace" else logging.getLevelName(level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("imgcache.proxy.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    general = logging.StreamHandler(sys.stderr)
    general.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("imgcache")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)] + [general]
    root.setLevel(numeric)
    logging.captureWarnings(True)


def serve(config: ProxyConfig, *, host: str = "127.0.0.1", port: int = 8787, workers: int = 1,
          log_level: str = "info", graceful_timeout: float = 30.0,
          cache_options: dict[str, Any] | None = None) -> None:
    """Run the proxy until SIGTERM / Ctrl-C (blocking). The cache comes from
    :meth:`Cache.from_env` with ``cache_options`` (JSON values) over the ``IMGCACHE_*`` variables."""
    import uvicorn

    from ..cache import Cache

    configure_logging(log_level)
    options = _uvicorn_options(config, log_level, graceful_timeout)
    cache_options = dict(cache_options or {})
    Cache.from_env(**cache_options).close()  # a bad IMGCACHE_* value fails here, not in a worker
    operator_dir = _operator_metrics_dir()
    if workers > 1:
        os.environ[CONFIG_ENV] = config.to_json()
        os.environ[CACHE_ENV] = json.dumps(cache_options)
        os.environ[LOG_LEVEL_ENV] = log_level
        with _multiprocess_metrics(operator_dir):
            uvicorn.run("imgcache.proxy.server:app_from_env", factory=True, host=host, port=port,
                        workers=workers, **options)
        return
    from .app import create_app

    uvicorn.run(create_app(config, Cache.from_env(**cache_options), owns_cache=True), host=host, port=port,
                **options)


def _operator_metrics_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` (or its deprecated lower-case name) if the operator set it:
    it must be a directory (prometheus_client writes its files there, and never makes it)."""
    given = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if not given:
        return None
    if not os.path.isdir(given):
        raise ConfigError(f"{MULTIPROC_ENV}={given!r} is not a directory (prometheus_client's multiprocess "
                          "metrics are written there): make it, or unset the variable")
    return given


@contextmanager
def _multiprocess_metrics(operator_dir: str | None) -> Iterator[str]:
    """The directory of the workers' metrics, in the environment they inherit (uvicorn spawns
    them: each imports prometheus_client afresh, with the variable set).

    The operator's, used as it is (they wipe it between runs; the live gauges of gone
    processes are dropped by each worker's start); else a private one made for this run
    (``mkdtemp``: new, empty, mode 0700) and removed, with the variable, when the run ends.
    """
    if operator_dir is not None:
        os.environ[MULTIPROC_ENV] = operator_dir
        yield operator_dir
        return
    path = tempfile.mkdtemp(prefix="imgcache-metrics-")
    os.chmod(path, 0o700)
    os.environ[MULTIPROC_ENV] = path
    log.debug("imgcache proxy: worker metrics in %s", path)
    try:
        yield path
    finally:
        if os.environ.get(MULTIPROC_ENV) == path:
            del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)


class ProxyServer:
    """The proxy on a loopback port in a background thread::

        with ProxyServer(ProxyConfig(upstream=fake.base_url), cache) as proxy:
            client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-...")
    """

    def __init__(self, config: ProxyConfig, cache: Cache | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, log_level: str = "warning", **uvicorn_options: Any) -> None:
        self.config = config
        self.cache = cache
        self.host = host
        self._port = port
        self._options = {**_uvicorn_options(config, log_level, 5.0), **uvicorn_options}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app: Any = None

    def start(self, timeout: float = 30.0) -> Self:
        import uvicorn

        from .app import create_app

        self.app = create_app(self.config, self.cache)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._socket = sock
        self._server = uvicorn.Server(uvicorn.Config(self.app, **self._options))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"imgcache-proxy:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the proxy did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the proxy is not running")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.url + "/v1"

    @property
    def proxy(self) -> Any:
        """The app's :class:`~imgcache.proxy.app.Proxy` (tenants, metrics, upstream)."""
        return self.app.state.proxy
