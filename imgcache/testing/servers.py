"""Real Redis, Redis Cluster and S3 (moto) servers on free loopback ports, for tests.

Each launcher runs its server as a subprocess with output in a log file under a private
temporary directory, waits (boundedly) until it answers, and can be stopped, killed (for
fault tests) and restarted on the same port. Every started launcher is also stopped at
interpreter exit, so a failing test run leaves no servers behind.

    with RedisServer() as server:
        tier = RedisTier(server.url)
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RedisClusterServers", "RedisServer", "S3Server", "free_port"]

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_POLL = 0.05
_CLUSTER_BUS_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000

_running: set[_Launcher] = set()
_running_lock = threading.Lock()


def wait_until(condition: Callable[[], bool], timeout: float = 40.0) -> bool:
    """Poll ``condition`` every 20 ms until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (port + 10000) is valid and free as well."""
    for _ in range(200):
        port = free_port()
        bus = port + _CLUSTER_BUS_OFFSET
        if port not in taken and bus <= 65535 and _port_is_free(bus):
            return port
    raise RuntimeError("found no free port pair for a Redis Cluster node")


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} not found on PATH; install Redis to run these servers")
    return path


class _Process:
    """One server subprocess with its log file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C in the terminal is the test runner's
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        self.popen = None

    def kill(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)
        self.popen = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` until true; fail clearly if the process dies or time runs out.

        ``ready`` returns False (rather than raising) while the server is not up yet.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.running:
                raise RuntimeError(
                    f"{self.argv[0]} exited before {what}; log {self.log_path}:\n{self.log_tail()}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {START_TIMEOUT:g} s waiting until {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL)


class _Launcher:
    """Temp directory, context manager and atexit registration shared by the launchers."""

    _kind = "server"

    def __init__(self) -> None:
        self._tmpdir: Path | None = None

    @property
    def tmpdir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f"imgcache-{self._kind}-"))
        return self._tmpdir

    def start(self) -> Self:
        with _running_lock:
            _running.add(self)
        try:
            self._start()
        except BaseException:
            self._stop()
            with _running_lock:
                _running.discard(self)
            self._tmpdir = None  # left on disk: the error message points at its log
            raise
        return self

    def stop(self) -> None:
        """Stop the server(s) and remove the temporary directory."""
        self._stop()
        with _running_lock:
            _running.discard(self)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        launchers = list(_running)
    for launcher in launchers:
        launcher.stop()


def _redis_client(port: int) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),  # the caller polls
    )


def _redis_command(port: int, *args: str) -> Any:
    client = _redis_client(port)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _redis_ready(port: int, check: Callable[[int], bool]) -> Callable[[], bool]:
    """A readiness probe for :meth:`_Process.wait_until`: False while the node refuses."""
    from redis.exceptions import RedisError

    def ready() -> bool:
        try:
            return check(port)
        except RedisError:  # refused, or up but still loading
            return False

    return ready


def _answers_ping(port: int) -> bool:
    return bool(_redis_command(port, "PING"))


def _redis_argv(port: int, directory: Path, *extra: str) -> list[str]:
    return [
        _require("redis-server"),
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        *extra,
    ]  # fmt: skip


class _OneProcessLauncher(_Launcher):
    """A launcher of one server process on ``port`` that can be killed and restarted."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port if port is not None else free_port()
        self._process: _Process | None = None

    def _new_process(self) -> _Process:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _start(self) -> None:
        if self._process is None:
            self._process = self._new_process()
        self._process.start()
        self._process.wait_until(self._ready, f"it answered on port {self.port}")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server, losing its data; :meth:`restart` brings it back empty."""
        if self._process is not None:
            self._process.kill()

    def restart(self) -> None:
        """Start again on the same port, after :meth:`kill` or while running."""
        if self._process is not None:
            self._process.stop()
        self.start()


class RedisServer(_OneProcessLauncher):
    """A throwaway ``redis-server`` on 127.0.0.1 without persistence."""

    _kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _new_process(self) -> _Process:
        return _Process(_redis_argv(self.port, self.tmpdir), self.tmpdir / "redis.log")

    def _ready(self) -> bool:
        return _redis_ready(self.port, _answers_ping)()

    def flushall(self) -> None:
        _redis_command(self.port, "FLUSHALL")


class RedisClusterServers(_Launcher):
    """A Redis Cluster of ``nodes`` masters (no replicas) on 127.0.0.1."""

    _kind = "redis-cluster"

    def __init__(self, nodes: int = 3) -> None:
        super().__init__()
        if nodes < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        taken: set[int] = set()
        for _ in range(nodes):
            taken.add(_free_cluster_port(taken))
        self.ports = sorted(taken)
        self._processes: list[_Process] = []

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.ports[0]}/0"

    def _start(self) -> None:
        for port in self.ports:
            config = self.tmpdir / f"nodes-{port}.conf"
            argv = _redis_argv(
                port, self.tmpdir, "--cluster-enabled", "yes", "--cluster-config-file", str(config)
            )
            process = _Process(argv, self.tmpdir / f"redis-{port}.log")
            self._processes.append(process)
            process.start()
        for port, process in zip(self.ports, self._processes):
            process.wait_until(_redis_ready(port, _answers_ping), "it answered PING")
        self._create_cluster()
        for port, process in zip(self.ports, self._processes):
            process.wait_until(_redis_ready(port, _cluster_state_ok), "the cluster state was ok")

    def _create_cluster(self) -> None:
        log = self.tmpdir / "cluster-create.log"
        argv = [
            _require("redis-cli"), "--cluster", "create",
            *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        with open(log, "wb") as out:
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    timeout=START_TIMEOUT, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"redis-cli --cluster create timed out; see {log}") from exc
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"redis-cli --cluster create failed:\n{tail}")

    def _stop(self) -> None:
        for process in self._processes:
            process.stop()
        self._processes = []

    def flushall(self) -> None:
        """FLUSHALL on every node (each master holds its own slots)."""
        for port in self.ports:
            _redis_command(port, "FLUSHALL")


def _cluster_state_ok(port: int) -> bool:
    info = _redis_command(port, "CLUSTER", "INFO")
    if isinstance(info, bytes):
        return b"cluster_state:ok" in info
    return info.get("cluster_state") == "ok"


class S3Server(_OneProcessLauncher):
    """moto's standalone S3 server; its buckets live in memory and die with it."""

    _kind = "s3"

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _new_process(self) -> _Process:
        env = {**os.environ, **_DUMMY_CREDENTIALS}
        argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]
        return _Process(argv, self.tmpdir / "moto.log", env=env)

    def _ready(self) -> bool:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
        try:
            connection.request("GET", "/")
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        return True

    def client(self) -> Any:
        """A boto3 S3 client for this server, with dummy credentials."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=_DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=_DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


_DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
