"""A local stand-in for the OpenAI HTTP API, for tests, benchmarks and demos.

``FakeOpenAI`` is a real HTTP server on loopback (standard library only) that the
official ``openai`` SDK can talk to::

    with FakeOpenAI(image_size=(16, 16)) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        client.images.generate(prompt="a cat")

Every generated image differs from the previous one even for identical requests
(like the real API), so a test can tell a cached answer from a fresh one.

Endpoints: ``POST /v1/images/generations``, ``POST /v1/images/edits`` (multipart, one
``image`` or several ``image[]``), ``POST /v1/chat/completions`` and ``POST /v1/responses``
(both optionally streamed), ``GET /v1/models[/<id>]``, plus ``GET /files/<id>.png`` (the
target of ``response_format="url"``) and ``GET /hosted/<name>`` (see ``host_file``).

Vision answers read like ``fake answer #3 for: what is this? [images: 1f0c9a7b2d4e, 77ab...]``:
the call number, the last user text and, when images were sent, each image's
``image_digest`` (the first 12 hex digits of the SHA-256 of its bytes) in order, so a test
can tell which image an answer was made for. Images arrive as base64 data URLs or as http(s)
URLs, which the server downloads itself, from loopback hosts only (``host_file`` serves
bytes there). Images that are not PNG, JPEG, GIF or WebP, or bad data URLs, get the API's
400 errors; ``usage`` counts images with ``imgcache.pricing.image_tokens``. Pillow (the test
extra) is imported lazily to read image sizes; without it images are checked by signature
only and counted as 85 tokens.

Every request, including the server's own downloads of hosted files, is recorded
(``requests``, ``calls(path)``); ``fail_next(..., path=...)`` works for every endpoint.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import hashlib
import http.client
import io
import ipaddress
import itertools
import json
import re
import socket
import struct
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from ..pricing import image_tokens

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FakeOpenAI", "FormFile", "RecordedRequest", "fake_png", "image_digest"]

DEFAULT_SIZE = (1024, 1024)
MAX_SIDE = 4096
MODELS = (
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
)
# Output tokens per image that the real API bills for a 1024x1024 GPT image.
_IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the API's per-image limit
_IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")  # what vision inputs may be (Pillow's names)
_UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")  # what images.edit accepts
_DETAILS = ("low", "high", "auto", "original")
_FALLBACK_IMAGE_TOKENS = 85  # an image whose size or model has no formula
_DATA_URL = re.compile(r"data:(image/[\w.+-]+);base64,(.*)", re.DOTALL)
_HOSTED_NAME = re.compile(r"[A-Za-z0-9._-]+")
_CHUNK = 1 << 16


# --------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def fake_png(width: int, height: int, seed: bytes | str, *, alpha: bool = False) -> bytes:
    """Encode a striped/banded PNG whose colours are derived from ``seed``.

    Rows are built with bytes multiplication (no per-pixel loop): a
    1024x1024 image takes a few milliseconds.
    """
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    digest = hashlib.sha512(seed.encode() if isinstance(seed, str) else seed).digest()
    channels = 4 if alpha else 3
    band = -(-width // 8)

    def scanline(offset: int, opacity: bytes) -> bytes:
        colours = [digest[offset + 3 * i : offset + 3 * i + 3] + opacity for i in range(8)]
        return b"\x00" + b"".join(c * band for c in colours)[: width * channels]

    rows = (scanline(0, b"\xff" if alpha else b""), scanline(24, b"\x80" if alpha else b""))
    stripe = -(-height // 16)
    raw = b"".join(rows[i % 2] * stripe for i in range(16))[: height * len(rows[0])]
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 1))
        + _png_chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------- data types


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it (``r.body`` and ``r["body"]`` both work)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when empty or not JSON
    raw_body: bytes = b""
    # multipart/form-data fields by name, in order: text as str, files as FormFile (bytes)
    form: dict[str, list[str | FormFile]] | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class FormFile(bytes):
    """A file field of a multipart request: its bytes, with ``filename`` and ``content_type``."""

    filename: str | None
    content_type: str

    def __new__(cls, data: bytes, filename: str | None, content_type: str) -> FormFile:
        self = super().__new__(cls, data)
        self.filename = filename
        self.content_type = content_type
        return self


@dataclass(frozen=True)
class _Hosted:
    data: bytes
    content_type: str
    delay: float
    size: int


@dataclass(frozen=True)
class _ImageRef:
    """An image part of a chat or responses request, before it is loaded."""

    url: Any
    detail: Any
    param: str  # where it sits in the request, for error messages


@dataclass(frozen=True)
class _Image:
    digest: str
    size: tuple[int, int] | None  # None when Pillow is not installed


@dataclass
class _Failure:
    status: int
    count: int
    retry_after: float | None
    code: str | None
    message: str | None
    path: str | None


@dataclass
class _Reply:
    status: int
    body: bytes | Iterable[bytes]  # an iterable is sent with chunked encoding
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for an iterable body: sent with Content-Length, not chunked


class _ApiError(Exception):
    """Raised by route handlers; rendered as an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"message": message, "type": type, "param": param, "code": code}
        self.headers = headers or {}

    def reply(self) -> _Reply:
        return _Reply(
            self.status, json.dumps({"error": self.payload}).encode(), headers=self.headers
        )


def _injected_error(failure: _Failure) -> _ApiError:
    status, code = failure.status, failure.code
    if status == 429:
        code = code or "rate_limit_exceeded"
        kind = "insufficient_quota" if code == "insufficient_quota" else "requests"
        message = "Rate limit reached for requests (injected by FakeOpenAI)."
    elif status >= 500:
        kind = "server_error"
        message = "The server had an error while processing your request. Sorry about that!"
    elif code == "content_policy_violation":
        kind = "invalid_request_error"
        message = (
            "Your request was rejected as a result of our safety system. "
            "Your prompt may contain text that is not allowed by our safety system."
        )
    elif status == 401:
        code = code or "invalid_api_key"
        kind = "invalid_request_error"
        message = "Incorrect API key provided (injected by FakeOpenAI)."
    else:
        kind = "invalid_request_error"
        message = f"Injected failure with HTTP status {status}."
    headers = {}
    if failure.retry_after is not None:
        headers["Retry-After"] = f"{failure.retry_after:g}"
    return _ApiError(status, failure.message or message, type=kind, code=code, headers=headers)


def _path_matches(request_path: str, path: str) -> bool:
    """``path`` may be given with or without the ``/v1`` prefix."""
    path = "/" + path.lstrip("/")
    return request_path in (path, "/v1" + path)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def image_digest(data: bytes) -> str:
    """How answers name an input image: the first 12 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:12]


# ------------------------------------------------------------------- the server


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


Route = Callable[["FakeOpenAI", RecordedRequest], _Reply]


class FakeOpenAI:
    """Loopback HTTP server mimicking the OpenAI endpoints imgcache uses (see the module doc)."""

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
        self._failures: list[_Failure] = []
        self._files: dict[str, bytes] = {}
        self._hosted: dict[str, _Hosted] = {}
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
        path = _request_path(path) if path is not None else None
        with self._lock:
            self._failures.append(_Failure(status, count, retry_after, code, message, path))

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
        if name is not None and not _HOSTED_NAME.fullmatch(name):
            raise ValueError("name may only hold letters, digits, '.', '_' and '-'")
        name = name or uuid.uuid4().hex
        hosted = _Hosted(bytes(data), content_type, delay, len(data) if size is None else size)
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
            path = _request_path(path)
            return sum(_path_matches(r.path, path) for r in self._requests)

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
            form=_parse_form(content_type, raw) if "multipart/form-data" in content_type else None,
        )
        hosted = request.path.startswith("/hosted/")
        with self._lock:
            self._requests.append(request)
            failure = self._take_failure(request.path)
        if self.latency > 0 and not hosted:
            time.sleep(self.latency)
        try:
            if failure is not None:
                raise _injected_error(failure)
            reply = self._route(request)
        except _ApiError as exc:
            reply = exc.reply()
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: surface it to the client
            reply = _ApiError(
                500, f"FakeOpenAI internal error: {exc!r}", type="server_error"
            ).reply()
        self._send(handler, reply)

    def _take_failure(self, request_path: str) -> _Failure | None:
        """Pop one use of the first queued failure matching the path (lock held)."""
        hosted = request_path.startswith("/hosted/")
        for failure in self._failures:
            if (failure.path is None and not hosted) or (
                failure.path is not None and _path_matches(request_path, failure.path)
            ):
                failure.count -= 1
                if failure.count == 0:
                    self._failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
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

    def _route(self, request: RecordedRequest) -> _Reply:
        route = self._ROUTES.get((request.method, request.path))
        if route is not None:
            return route(self, request)
        if request.method == "GET" and request.path.startswith("/files/"):
            return self._get_file(request.path[len("/files/") :])
        if request.method == "GET" and request.path.startswith("/hosted/"):
            return self._get_hosted(request.path[len("/hosted/") :])
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            return self._get_model(request.path[len("/v1/models/") :])
        raise _ApiError(404, f"Invalid URL ({request.method} {request.path})")

    def _next_call(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    @staticmethod
    def _json_object(request: RecordedRequest) -> dict[str, Any]:
        if not isinstance(request.body, dict):
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. "
                "(HINT: The OpenAI API expects a JSON payload.)",
            )
        return request.body

    @staticmethod
    def _json(payload: Any) -> _Reply:
        return _Reply(200, json.dumps(payload).encode())

    # ------------------------------------------------------------------ images

    def _images_generations(self, request: RecordedRequest) -> _Reply:
        body = self._json_object(request)
        return self._json(self._images_payload(body, seed=body))

    def _images_edits(self, request: RecordedRequest) -> _Reply:
        """Like generations, from a multipart form with input images (and maybe a mask).

        Uploads are checked as the API checks them (declared type, then the bytes); where the
        API differs by model (several images, mask shape, sizes) the fake is lenient.
        """
        if request.form is None:
            raise _ApiError(
                400,
                "Invalid Content-Type header (expected multipart/form-data).",
                code="invalid_content_type",
            )
        files = request.form.get("image", []) + request.form.get("image[]", [])
        uploads = [value for value in files if isinstance(value, FormFile)]
        if not uploads:
            raise _ApiError(
                400,
                "Missing required parameter: 'image'.",
                param="image",
                code="missing_required_parameter",
            )
        images = [_read_upload(upload, "image") for upload in uploads]
        masks = [v for v in request.form.get("mask", []) if isinstance(v, FormFile)]
        mask = _read_upload(masks[-1], "mask").digest if masks else None
        params = _form_params(request.form)
        seed = {"fields": params, "images": [image.digest for image in images], "mask": mask}
        # gpt-image-1's input-image formula is not in the pricing table: gpt-4o's stands in.
        counted = sum(_image_tokens(image, "high", "gpt-4o") for image in images)
        return self._json(self._images_payload(params, seed=seed, input_image_tokens=counted))

    def _images_payload(
        self, body: dict[str, Any], *, seed: Any, input_image_tokens: int = 0
    ) -> dict[str, Any]:
        """Validate an images request and answer it: ``seed`` (with the call number) picks
        the pixels; ``input_image_tokens`` are the input images' tokens (edits).
        """
        prompt = _require(body, "prompt", str)
        if not prompt:
            raise _ApiError(
                400, "Invalid 'prompt': empty string.", param="prompt", code="empty_string"
            )
        model = str(body.get("model") or "dall-e-2")
        gpt_image = model.startswith("gpt-image")
        n = _optional_int(body, "n", 1, 1, 10)
        if model == "dall-e-3" and n != 1:
            raise _ApiError(400, "You must provide n=1 for this model.", param="n")
        response_format = body.get("response_format")
        if response_format is not None and gpt_image:
            raise _ApiError(
                400,
                "Unknown parameter: 'response_format'.",
                param="response_format",
                code="unknown_parameter",
            )
        if response_format not in (None, "url", "b64_json"):
            raise _ApiError(
                400,
                f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
                param="response_format",
                code="invalid_value",
            )
        if body.get("stream"):
            raise _ApiError(
                400, "Streaming image generation is not supported by FakeOpenAI.", param="stream"
            )
        requested = _parse_size(body.get("size"))  # validated even when overridden
        width, height = self.image_size or requested
        quality = body.get("quality") or "auto"
        quality = "high" if quality == "auto" and gpt_image else quality
        background = body.get("background") or "auto"
        background = "opaque" if background == "auto" else background

        call = self._next_call()
        data = []
        for index in range(n):
            material = json.dumps({"call": call, "index": index, "request": seed}, sort_keys=True)
            transparent = gpt_image and background == "transparent"
            png = fake_png(width, height, material, alpha=transparent)
            if response_format == "url":
                file_id = f"img-{uuid.uuid4().hex}"
                with self._lock:
                    self._files[file_id] = png
                item: dict[str, Any] = {"url": f"{self.url}/files/{file_id}.png"}
            else:
                item = {"b64_json": base64.b64encode(png).decode("ascii")}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A fake rendering of: {prompt}"
            data.append(item)

        payload: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            text_tokens = _tokens(prompt)
            output_tokens = _IMAGE_TOKENS.get(quality, _IMAGE_TOKENS["medium"]) * n
            input_tokens = text_tokens + input_image_tokens
            payload.update(
                background=background,
                output_format=body.get("output_format") or "png",  # bytes are PNG regardless
                quality=quality,
                size=f"{width}x{height}",
                usage={
                    "input_tokens": input_tokens,
                    "input_tokens_details": {
                        "image_tokens": input_image_tokens,
                        "text_tokens": text_tokens,
                    },
                    "output_tokens": output_tokens,
                    "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
                    "total_tokens": input_tokens + output_tokens,
                },
            )
        return payload

    def _get_file(self, name: str) -> _Reply:
        with self._lock:
            png = self._files.get(name.removesuffix(".png"))
        if png is None:
            raise _ApiError(404, "The requested file does not exist or its URL has expired.")
        return _Reply(200, png, content_type="image/png")

    def _get_hosted(self, name: str) -> _Reply:
        with self._lock:
            hosted = self._hosted.get(name)
        if hosted is None:
            raise _ApiError(404, "The requested file does not exist.")
        if hosted.delay > 0:
            time.sleep(hosted.delay)
        if hosted.size == len(hosted.data):
            return _Reply(200, hosted.data, content_type=hosted.content_type)
        body = _padded(hosted.data, hosted.size)
        return _Reply(200, body, content_type=hosted.content_type, length=hosted.size)

    # ------------------------------------------------------------------ vision inputs

    def _read_images(self, refs: list[_ImageRef], model: str) -> tuple[list[str], int]:
        """Load every image of a request: their digests, in order, and their input tokens."""
        digests, tokens = [], 0
        for ref in refs:
            if ref.detail not in _DETAILS:
                raise _ApiError(
                    400,
                    f"Invalid value: '{ref.detail}'. Supported values are: 'low', 'high', "
                    "'auto' and 'original'.",
                    param=ref.param.rsplit(".", 1)[0] + ".detail",
                    code="invalid_value",
                )
            image = _read_image(self._image_bytes(ref))
            digests.append(image.digest)
            tokens += _image_tokens(image, ref.detail, model)
        return digests, tokens

    def _image_bytes(self, ref: _ImageRef) -> bytes:
        """The bytes behind an image URL: a base64 data URL, or a download (loopback only)."""
        url = ref.url
        if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
            return self._download(url)

        def invalid(got: str) -> _ApiError:
            return _ApiError(
                400,
                f"Invalid image URL: '{ref.param}'. Expected a base64-encoded data URL with an "
                f"image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), "
                f"but got {got}.",
                param=ref.param,
                code="invalid_value",
            )

        if not isinstance(url, str) or not url.startswith("data:"):
            raise invalid("a value without the 'data:' prefix")
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise invalid("a data URL without an image MIME type or base64 encoding")
        try:
            data = base64.b64decode(match[2], validate=True)
        except (binascii.Error, ValueError):
            raise invalid("invalid base64-encoded bytes") from None
        if not data:
            raise invalid("empty base64-encoded bytes")
        return data

    def _download(self, url: str) -> bytes:
        """Fetch an image URL as the API would, from loopback hosts only (no network)."""
        failed = _ApiError(
            400, f"Error while downloading {url}.", param="url", code="invalid_value"
        )
        if not _is_loopback(urlsplit(url).hostname or ""):
            failed.payload["message"] += " (FakeOpenAI downloads from loopback hosts only.)"
            raise failed
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
        try:
            with opener.open(url, timeout=self.fetch_timeout) as response:
                data: bytes = response.read(MAX_IMAGE_BYTES + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise failed from exc
        return data

    # -------------------------------------------------------------------- chat

    def _chat_completions(self, request: RecordedRequest) -> _Reply:
        body = self._json_object(request)
        model = body.get("model")
        if not model:
            raise _ApiError(400, "you must provide a model parameter")
        messages = _require(body, "messages", list)
        if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise _ApiError(
                400,
                "Invalid 'messages': expected a non-empty array of messages with a 'role'.",
                param="messages",
                code="invalid_value",
            )
        n = _optional_int(body, "n", 1, 1, 128)
        texts, refs = _scan_messages(messages, "messages")
        digests, images_tokens = self._read_images(refs, str(model))
        call = self._next_call()
        answer = _answer(call, texts, digests)
        prompt_tokens = sum(_tokens(t) for t in texts) + images_tokens
        completion_tokens = _tokens(answer) * n
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {
            "id": f"chatcmpl-fake{call}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _chat_chunks(base, answer, n, usage if include_usage else None)
            return _Reply(200, events, content_type="text/event-stream")
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": answer, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
            for i in range(n)
        ]
        return self._json({**base, "object": "chat.completion", "choices": choices, "usage": usage})

    # --------------------------------------------------------------- responses

    def _responses(self, request: RecordedRequest) -> _Reply:
        body = self._json_object(request)
        model = _require(body, "model", str)
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        items = _require({"input": items}, "input", list)
        texts, refs = _scan_messages(items, "input")
        digests, images_tokens = self._read_images(refs, model)
        instructions = body.get("instructions")
        call = self._next_call()
        answer = _answer(call, texts, digests)
        input_tokens = sum(_tokens(t) for t in texts) + images_tokens
        input_tokens += _tokens(instructions) if isinstance(instructions, str) else 0
        output_tokens = _tokens(answer)
        now = int(time.time())
        message = {
            "id": f"msg_fake{call}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
            ],
        }
        response = {
            "id": f"resp_fake{call}",
            "object": "response",
            "created_at": now,
            "completed_at": now,
            "status": "completed",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": instructions,
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": model,
            "output": [message],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "user": body.get("user"),
        }
        if body.get("stream"):
            return _Reply(200, _response_events(response), content_type="text/event-stream")
        return self._json(response)

    # ------------------------------------------------------------------ models

    def _list_models(self, request: RecordedRequest) -> _Reply:
        return self._json({"object": "list", "data": [_model(m) for m in MODELS]})

    def _get_model(self, model_id: str) -> _Reply:
        if model_id not in MODELS:
            raise _ApiError(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return self._json(_model(model_id))

    _ROUTES: ClassVar[dict[tuple[str, str], Route]] = {
        ("POST", "/v1/images/generations"): _images_generations,
        ("POST", "/v1/images/edits"): _images_edits,
        ("POST", "/v1/chat/completions"): _chat_completions,
        ("POST", "/v1/responses"): _responses,
        ("GET", "/v1/models"): _list_models,
    }


# ------------------------------------------------------------------ helpers


def _require(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        raise _ApiError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    if not isinstance(value, kind):
        expected = {"str": "a string", "list": "an array"}.get(kind.__name__, kind.__name__)
        raise _ApiError(
            400,
            f"Invalid type for '{name}': expected {expected}, but got "
            f"{type(value).__name__} instead.",
            param=name,
            code="invalid_type",
        )
    return value


def _optional_int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ApiError(
            400, f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type"
        )
    if value < low:
        raise _ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value "
            f">= {low}, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise _ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value "
            f"<= {high}, but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def _parse_size(size: Any) -> tuple[int, int]:
    """Accept any ``WxH`` up to 4096 per side (more lenient than the real API) or ``auto``."""
    if size is None or size == "auto":
        return DEFAULT_SIZE
    try:
        width, height = (int(part) for part in str(size).lower().split("x"))
    except ValueError:
        width = height = 0
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise _ApiError(
            400,
            f"Invalid value: '{size}'. Expected a size like '1024x1024'.",
            param="size",
            code="invalid_value",
        )
    return width, height


def _scan_messages(items: list[Any], field: str) -> tuple[list[str], list[_ImageRef]]:
    """Texts of the user messages, in order, and the image parts of all messages.

    Serves chat ``messages`` (``text`` and ``image_url`` parts) and responses ``input``
    (``input_text`` and ``input_image`` parts); items without a role (tool output) are skipped.
    """
    texts: list[str] = []
    refs: list[_ImageRef] = []
    for i, message in enumerate(items):
        if not isinstance(message, dict) or "role" not in message:
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        text = []
        for j, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"{field}[{i}].content[{j}]"
            if kind == "image_url":  # chat: {"image_url": {"url": ..., "detail": ...}}
                spec = part.get("image_url")
                spec = spec if isinstance(spec, dict) else {"url": spec}
                detail = spec.get("detail") or "auto"
                refs.append(_ImageRef(spec.get("url"), detail, f"{where}.image_url.url"))
            elif kind == "input_image":  # responses: {"image_url": ..., "detail": ...}
                if part.get("file_id") and not part.get("image_url"):
                    raise _ApiError(
                        400,
                        "FakeOpenAI does not store files: give input_image an image_url.",
                        param=f"{where}.file_id",
                        code="invalid_value",
                    )
                detail = part.get("detail") or "auto"
                refs.append(_ImageRef(part.get("image_url"), detail, f"{where}.image_url"))
            elif kind in ("text", "input_text", "output_text"):
                text.append(str(part.get("text", "")))
        if message.get("role") == "user":
            texts.append(" ".join(text))
    return texts, refs


def _answer(call: int, texts: list[str], digests: list[str]) -> str:
    """``fake answer #<call> for: <last user text>`` plus ``[images: <d1>, <d2>]`` if any."""
    answer = f"fake answer #{call} for: {texts[-1] if texts else ''}"
    if digests:
        answer += f" [images: {', '.join(digests)}]"
    return answer


def _pieces(answer: str) -> list[str]:
    """The answer cut into streaming deltas, one word each (spaces kept)."""
    words = answer.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def _unsupported_image() -> _ApiError:
    return _ApiError(
        400,
        "You uploaded an unsupported image. Please make sure your image is below 20 MB in size "
        "and is of one the following formats: ['png', 'jpeg', 'gif', 'webp'].",
        code="invalid_image_format",
    )


_SIGNATURES = (_PNG_SIGNATURE, b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def _read_image(data: bytes) -> _Image:
    """Check that ``data`` is a PNG, JPEG, GIF or WebP image of at most 20 MB; read its size."""
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise _unsupported_image()
    try:
        from PIL import Image  # the test extra; imported here so the module needs nothing
    except ImportError:
        webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        if not (webp or data.startswith(_SIGNATURES)):
            raise _unsupported_image() from None
        return _Image(image_digest(data), None)
    try:
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, image.format
            image.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for bad input
        raise _unsupported_image() from None
    if kind not in _IMAGE_FORMATS:
        raise _unsupported_image()
    return _Image(image_digest(data), size)


def _image_tokens(image: _Image, detail: str, model: str) -> int:
    """An image's input tokens by the pricing formulas; 85 without a size or a formula."""
    if image.size is None:
        return _FALLBACK_IMAGE_TOKENS
    detail = "high" if detail == "original" else detail  # no formula for "original"
    counted = image_tokens(*image.size, detail=detail, model=model)
    return _FALLBACK_IMAGE_TOKENS if counted is None else counted


def _read_upload(upload: FormFile, param: str) -> _Image:
    """A multipart image upload, checked like the API checks it: declared type, then bytes."""
    if upload.content_type not in _UPLOAD_TYPES:
        raise _ApiError(
            400,
            f"Invalid file '{param}': unsupported mimetype ('{upload.content_type}'). Supported "
            "file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
            param=param,
            code="unsupported_file_mimetype",
        )
    return _read_image(bytes(upload))


def _parse_form(content_type: str, raw: bytes) -> dict[str, list[str | FormFile]] | None:
    """multipart/form-data fields by name, parsed by the standard library's email parser."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n"
    try:
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            head.encode("latin-1", "replace") + raw
        )
    except Exception:  # noqa: BLE001 - the parser records defects; anything else is garbage
        return None
    if not message.is_multipart():
        return None
    form: dict[str, list[str | FormFile]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        value: str | FormFile
        if filename is None:
            value = data.decode("utf-8", "replace")
        else:
            value = FormFile(data, filename, part.get_content_type())
        form.setdefault(name, []).append(value)
    return form


def _form_params(form: dict[str, list[str | FormFile]]) -> dict[str, Any]:
    """The text fields of a form (last value wins), with ``n`` as an int and ``stream`` a bool."""
    params: dict[str, Any] = {
        name: values[-1] for name, values in form.items() if isinstance(values[-1], str)
    }
    if "n" in params:
        try:
            params["n"] = int(params["n"])
        except ValueError:
            raise _ApiError(
                400, "Invalid type for 'n': expected an integer.", param="n", code="invalid_type"
            ) from None
    if "stream" in params:
        params["stream"] = params["stream"].lower() in ("true", "1")
    return params


def _padded(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` then zero bytes up to ``size``, in chunks."""
    yield data
    left = size - len(data)
    zeros = bytes(min(left, _CHUNK))
    while left > 0:
        yield zeros[: min(left, _CHUNK)]
        left -= _CHUNK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _request_path(path_or_url: str) -> str:
    """The path part of a full URL; a bare path unchanged."""
    return urlsplit(path_or_url).path if "://" in path_or_url else path_or_url


def _chat_chunks(
    base: dict[str, Any], answer: str, n: int, usage: dict[str, int] | None
) -> Iterator[bytes]:
    """Server-sent events of ``chat.completion.chunk`` objects, then ``[DONE]``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
        if usage is not None:
            chunk.setdefault("usage", None)
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    for i in range(n):
        yield event([choice(i, {"role": "assistant", "content": ""})])
        for piece in _pieces(answer):
            yield event([choice(i, {"content": piece})])
        yield event([choice(i, {}, "stop")])
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


def _response_events(response: dict[str, Any]) -> Iterator[bytes]:
    """Server-sent events of a streamed response: created, text deltas, ..., completed."""
    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        data = json.dumps({"type": kind, "sequence_number": next(sequence), **fields})
        return f"event: {kind}\ndata: {data}\n\n".encode()

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    pending["completed_at"] = None
    message = response["output"][0]
    text_part = message["content"][0]
    where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    item = {**message, "status": "in_progress", "content": []}
    yield event("response.output_item.added", output_index=0, item=item)
    yield event("response.content_part.added", **where, part={**text_part, "text": ""})
    for piece in _pieces(text_part["text"]):
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield event("response.output_text.done", **where, text=text_part["text"], logprobs=[])
    yield event("response.content_part.done", **where, part=text_part)
    yield event("response.output_item.done", output_index=0, item=message)
    yield event("response.completed", response=response)


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "fake-openai"}
