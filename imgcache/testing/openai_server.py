"""A local stand-in for the OpenAI HTTP API, for tests, benchmarks and demos.

``FakeOpenAI`` is a real HTTP server on loopback (standard library only) that the
official ``openai`` SDK can talk to::

    with FakeOpenAI(image_size=(16, 16)) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        client.images.generate(prompt="a cat")

Every generated image differs from the previous one even for identical requests
(like the real API), so a test can tell a cached answer from a fresh one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["FakeOpenAI", "RecordedRequest", "fake_png"]

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

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


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
    """Loopback HTTP server mimicking the OpenAI endpoints imgcache uses.

    Endpoints: ``POST /v1/images/generations``, ``POST /v1/chat/completions``
    (optionally streamed), ``GET /v1/models[/<id>]`` and ``GET /files/<id>.png``
    (the target of ``response_format="url"`` image URLs).
    """

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
        self._port = port
        self._initial_latency = latency
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._files: dict[str, bytes] = {}
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
        with self._lock:
            self._failures.append(_Failure(status, count, retry_after, code, message, path))

    def expire_urls(self) -> None:
        """Make every image URL issued so far answer 404, like expired upstream URLs."""
        with self._lock:
            self._files.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    def calls(self, path: str | None = None) -> int:
        """Number of requests received (injected failures included), optionally for one path."""
        with self._lock:
            if path is None:
                return len(self._requests)
            return sum(_path_matches(r.path, path) for r in self._requests)

    def reset(self) -> None:
        """Forget requests, pending failures and served files; restore the initial latency."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._files.clear()
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
        request = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=split.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_body=raw,
        )
        with self._lock:
            self._requests.append(request)
            failure = self._take_failure(request.path)
        if self.latency > 0:
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
        for failure in self._failures:
            if failure.path is None or _path_matches(request_path, failure.path):
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
            seed = json.dumps({"call": call, "index": index, "request": body}, sort_keys=True)
            png = fake_png(width, height, seed, alpha=gpt_image and background == "transparent")
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
            image_tokens = _IMAGE_TOKENS.get(quality, _IMAGE_TOKENS["medium"]) * n
            payload.update(
                background=background,
                output_format=body.get("output_format") or "png",  # bytes are PNG regardless
                quality=quality,
                size=f"{width}x{height}",
                usage={
                    "input_tokens": text_tokens,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
                    "output_tokens": image_tokens,
                    "output_tokens_details": {"image_tokens": image_tokens, "text_tokens": 0},
                    "total_tokens": text_tokens + image_tokens,
                },
            )
        return self._json(payload)

    def _get_file(self, name: str) -> _Reply:
        with self._lock:
            png = self._files.get(name.removesuffix(".png"))
        if png is None:
            raise _ApiError(404, "The requested file does not exist or its URL has expired.")
        return _Reply(200, png, content_type="image/png")

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
        texts, images = _scan_messages(messages)
        user_text = texts[-1] if texts else ""
        call = self._next_call()
        answer = f"fake answer #{call} for: {user_text}"
        if images:
            answer += f" [images: {images}]"
        prompt_tokens = sum(_tokens(t) for t in texts) + 85 * images
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
        ("POST", "/v1/chat/completions"): _chat_completions,
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


def _scan_messages(messages: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Texts of the user messages, in order, and the number of image parts in all messages."""
    texts: list[str] = []
    images = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        text = []
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("image_url", "input_image", "image"):
                images += 1
            elif kind in ("text", "input_text"):
                text.append(str(part.get("text", "")))
        if message.get("role") == "user":
            texts.append(" ".join(text))
    return texts, images


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

    pieces = answer.split(" ")
    for i in range(n):
        yield event([choice(i, {"role": "assistant", "content": ""})])
        for position, piece in enumerate(pieces):
            yield event([choice(i, {"content": piece if position == 0 else " " + piece})])
        yield event([choice(i, {}, "stop")])
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "fake-openai"}
