"""The HTTP plumbing and :class:`FakeOpenAI`: lifecycle, test-facing controls and routing.

Requests are recorded, matched against the injected failures (``faults``), delayed by the
server's ``latency`` and routed to the endpoint modules (``images``, ``chat``,
``responses``, ``models``, ``files``), whose handlers take the server as first argument and
share its lock, call counter and file tables.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from . import chat, files, images, models, responses
from .faults import Failure, injected_error, path_matches, request_path, take_failure
from .files import HOSTED_NAME, Hosted
from .protocol import ApiError, RecordedRequest, Reply, parse_form

if TYPE_CHECKING:
    from typing_extensions import Self


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI
    connections: set[socket.socket]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client disconnects are expected; handler errors become 500 replies


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK stall
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


Route = Callable[["FakeOpenAI", RecordedRequest], Reply]


class FakeOpenAI:
    """Loopback HTTP server mimicking the OpenAI endpoints imgcache uses (see the package doc)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        self.host = host
        self.latency = latency  # seconds slept before every answer; settable at runtime
        self.image_size = image_size  # overrides the requested size (small = fast tests)
        self.fetch_timeout = 10.0  # seconds the server waits when it downloads an image URL
        self._port = port
        self._initial_latency = latency
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: list[Failure] = []
        self._files: dict[str, bytes] = {}
        self._hosted: dict[str, Hosted] = {}
        self._counter = 0  # never reset: answers stay unique for the server's lifetime
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        server = _Server((self.host, self._port), _Handler)
        server.fake = self
        server.connections = set()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAI:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for conn in list(server.connections):  # wake handlers idling on keep-alive sockets
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.url + "/v1"

    # ------------------------------------------------------- test-facing controls

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``path`` only, if given) with an error.

        Queued failures are consumed in order before normal handling; a 429 with
        ``retry_after`` carries a ``Retry-After`` header.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        path = request_path(path) if path is not None else None
        with self._lock:
            self._failures.append(Failure(status, count, retry_after, code, message, path))

    def expire_urls(self) -> None:
        """Make every image URL issued so far answer 404, like expired upstream URLs.

        Files from ``host_file`` stay: they stand for third-party hosts, not OpenAI's URLs.
        """
        with self._lock:
            self._files.clear()

    def host_file(
        self,
        data: bytes,
        content_type: str = "image/png",
        *,
        delay: float = 0.0,
        size: int | None = None,
        name: str | None = None,
    ) -> str:
        """Serve ``data`` at a loopback URL (e.g. a "remote" image URL) and return the URL.

        ``delay``: seconds to wait before each answer (timeout tests; the server-wide
        ``latency`` does not apply to hosted files). ``size``: pad the body with zero bytes to
        this length, streamed with a Content-Length (size-limit tests, without holding it in
        memory). ``name``: a stable URL; hosting under the same name again replaces the
        content, like a remote image that changed. ``calls(url)`` counts fetches, the
        server's own included. ``unhost(url)`` and ``reset()`` remove hosted files;
        ``expire_urls()`` does not. Unscoped ``fail_next`` failures skip hosted files; give
        ``path=url`` to fail one.
        """
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if size is not None and size < len(data):
            raise ValueError("size must be at least len(data)")
        if name is not None and not HOSTED_NAME.fullmatch(name):
            raise ValueError("name may only hold letters, digits, '.', '_' and '-'")
        name = name or uuid.uuid4().hex
        hosted = Hosted(bytes(data), content_type, delay, len(data) if size is None else size)
        with self._lock:
            self._hosted[name] = hosted
        return f"{self.url}/hosted/{name}"

    def unhost(self, url: str) -> None:
        """Make a ``host_file`` URL answer 404 from now on."""
        with self._lock:
            self._hosted.pop(urlsplit(url).path.removeprefix("/hosted/"), None)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def calls(self, path: str | None = None) -> int:
        """Number of requests received (injected failures included), optionally for one path.

        ``path`` may also be a full URL, such as one from ``host_file``.
        """
        with self._lock:
            if path is None:
                return len(self._requests)
            path = request_path(path)
            return sum(path_matches(r.path, path) for r in self._requests)

    def reset(self) -> None:
        """Forget requests, pending failures, served and hosted files; restore the latency."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._files.clear()
            self._hosted.clear()
        self.latency = self._initial_latency

    # ---------------------------------------------------------------- plumbing

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        content_type = handler.headers.get("Content-Type") or ""
        request = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=split.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_body=raw,
            form=parse_form(content_type, raw) if "multipart/form-data" in content_type else None,
        )
        hosted = request.path.startswith("/hosted/")
        with self._lock:
            self._requests.append(request)
            failure = take_failure(self._failures, request.path)
        if self.latency > 0 and not hosted:
            time.sleep(self.latency)
        try:
            if failure is not None:
                raise injected_error(failure)
            reply = self._route(request)
        except ApiError as exc:
            reply = exc.reply()
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: surface it to the client
            reply = ApiError(
                500, f"FakeOpenAI internal error: {exc!r}", type="server_error"
            ).reply()
        self._send(handler, reply)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if isinstance(reply.body, bytes):
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            return
        if reply.length is not None:
            handler.send_header("Content-Length", str(reply.length))
            handler.end_headers()
            for part in reply.body:
                handler.wfile.write(part)
            return
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        for part in reply.body:
            if part:
                handler.wfile.write(b"%X\r\n%s\r\n" % (len(part), part))
                handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")

    def _route(self, request: RecordedRequest) -> Reply:
        route = self._ROUTES.get((request.method, request.path))
        if route is not None:
            return route(self, request)
        if request.method == "GET" and request.path.startswith("/files/"):
            return files.get_file(self, request.path[len("/files/") :])
        if request.method == "GET" and request.path.startswith("/hosted/"):
            return files.get_hosted(self, request.path[len("/hosted/") :])
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            return models.get_model(request.path[len("/v1/models/") :])
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})")

    def _next_call(self) -> int:
        """The next call number, which seeds every answer (shared by the endpoint modules)."""
        with self._lock:
            self._counter += 1
            return self._counter

    _ROUTES: ClassVar[dict[tuple[str, str], Route]] = {
        ("POST", "/v1/images/generations"): images.generations,
        ("POST", "/v1/images/edits"): images.edits,
        ("POST", "/v1/chat/completions"): chat.chat_completions,
        ("POST", "/v1/responses"): responses.responses,
        ("GET", "/v1/models"): models.list_models,
    }
