"""Attacks on ``imgcache serve`` by a caller it does not trust, each against a real ``imgcache serve``
process (the library where it applies): host files, internal addresses, slow servers, image bombs,
guessable file URLs, paths escaping the upstream, header bombs, hostile JSON.

Loopback stands for the operator's internal network: a recording HTTP server on 127.0.0.1 must
see no request. 127.0.0.2 (also loopback on Linux) stands for a public host: the fetching proxy is
told to allow it (``--fetch-allow 127.0.0.2/32``) and nothing else beyond public addresses.
"""

from __future__ import annotations

import base64
import errno
import http.client
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from PIL import Image

from imgcache import Cache
from imgcache.adapters.openai import generate_request
from imgcache.proxy import ProxyConfig, ProxyServer
from imgcache.proxy.files import FileRef, FileUrls
from imgcache.testing import FakeOpenAI
from imgcache.testing.servers import free_port, wait_until

from _helpers import data_url, png_chunk

pytestmark = pytest.mark.slow  # a proxy, slow servers and deadlines: 1-8 s a test

KEY = "sk-attacker-0123456789abcdef"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"
PUBLIC = "127.0.0.2"  # allowed by the fetching proxy: stands for a public host


# -- helpers -------------------------------------------------------------------------------------


def png(seed: int = 1, size: int = 64) -> bytes:
    img = Image.new("RGB", (size, size), (seed * 37 % 256, 120, 200))
    for x in range(size):
        img.putpixel((x, (x * seed) % size), (255, 255, 0))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def chat_body(image: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]}]}


def responses_body(image: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Describe it."}, {"type": "input_image", "image_url": image}]}]}


def png_bomb(side: int = 7000) -> bytes:
    """A ``side`` x ``side`` 16-bit RGBA PNG of a few hundred KB (8 bytes a pixel decoded)."""
    rows = (b"\x00" + b"\x00" * 8 * side) * side
    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b""))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def refused(response: httpx.Response) -> dict[str, Any]:
    """The proxy's own 400 for an image source it does not read."""
    assert response.status_code == 400, response.text
    assert response.headers["x-imgcache"] == "error; reason=image-source"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_image_url" and error["type"] == "invalid_request_error"
    return error


@dataclass
class Served:
    """An ``imgcache serve`` process."""

    url: str
    process: subprocess.Popen[str]
    directory: Path

    def post(self, path: str, body: Any, timeout: float = 30.0, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=AUTH, timeout=timeout, **kwargs)


@contextmanager
def serve(directory: Path, upstream: str, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "imgcache.cli", "serve", "--port", str(port), "--upstream", upstream,
         "--no-semantic", "--log-level", "warning", *args],
        env={**os.environ, "IMGCACHE_DIR": str(directory), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"imgcache serve exited with {process.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        assert wait_until(up, 60), "imgcache serve did not answer /healthz"
        yield Served(url, process, directory)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Recorder:
    """A loopback HTTP server that records every request it gets. Paths: ``/secret`` (text),
    ``/image`` (a PNG); for imgcache's fetcher only (others, such as the fake upstream, get 404),
    ``/redirect?to=URL&delay=S`` and ``/trickle`` (its status line and headers at 5 bytes a
    second)."""

    host: str = "127.0.0.1"
    seen: list[str] = field(default_factory=list)
    fetches: list[float] = field(default_factory=list)
    """When each request of imgcache's fetcher (by its User-Agent) came."""

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    recorder.seen.append(self.path)
                    if self.headers.get("user-agent") == "imgcache":
                        recorder.fetches.append(time.monotonic())
                self.answer()

            def answer(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                ours = self.headers.get("user-agent") == "imgcache"
                if parts.path in ("/redirect", "/trickle") and not ours:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/redirect":
                    time.sleep(float(query.get("delay", ["0"])[0]))
                    self.send_response(302)
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/trickle":
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.2)
                else:
                    body = {"/secret": b"internal secret 42", "/image": png(9)}.get(parts.path)
                    self.send_response(200 if body else 404)
                    self.send_header("Content-Length", str(len(body or b"")))
                    self.end_headers()
                    self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(image_size=(32, 32)) as server:
        yield server


@pytest.fixture(scope="module")
def plain(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``imgcache serve`` with its defaults (remote images not fetched)."""
    with serve(tmp_path_factory.mktemp("plain"), fake.base_url) as served:
        yield served


@pytest.fixture(scope="module")
def fetching(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``imgcache serve --fetch-remote``: public addresses, and 127.0.0.2 standing for one."""
    with serve(tmp_path_factory.mktemp("fetching"), fake.base_url, "--fetch-remote", "--fetch-timeout", "2",
               "--fetch-allow", f"{PUBLIC}/32") as served:
        yield served


@pytest.fixture
def internal() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


@pytest.fixture
def public() -> Iterator[Recorder]:
    recorder = Recorder(PUBLIC)
    yield recorder
    recorder.close()


# -- host files ------------------------------------------------------------------------------------


def test_paths_and_file_urls_are_refused_and_never_opened(plain: Served, fetching: Served, fake: FakeOpenAI,
                                                          tmp_path: Path) -> None:
    picture = png(3)
    secret = tmp_path / "secret.png"
    secret.write_bytes(picture)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened: list[bool] = []
    writer = threading.Thread(target=lambda: opened.append(bool(open(fifo, "wb"))), daemon=True)
    writer.start()  # blocks until somebody opens the FIFO for reading
    sources = [str(secret), f"file://{secret}", f"FILE://{secret}", "/dev/zero", str(fifo), "/etc/shadow",
               "secret.png", "/proc/self/environ"]
    for proxy in (plain, fetching):
        assert proxy.post(CHAT, chat_body(data_url(picture))).status_code == 200  # the picture is cached
        chats = fake.calls(CHAT)
        for source in sources:
            for path, body in ((CHAT, chat_body(source)), ("/v1/responses", responses_body(source))):
                started = time.monotonic()
                error = refused(proxy.post(path, body, timeout=10))
                assert time.monotonic() - started < 5 and "data: URL" in error["message"]
        assert fake.calls(CHAT) == chats  # answered by the proxy: no hit, nothing forwarded
    writer.join(0.5)
    assert writer.is_alive() and not opened  # nobody opened the FIFO
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
    writer.join(5)
    uploaded = json.dumps([request.body for request in fake.requests if request.body is not None])
    assert base64.b64encode(picture).decode() in uploaded  # the data URL went up; no file did
    assert uploaded.count(base64.b64encode(picture).decode()) == 2


def test_the_library_refuses_fifos_and_devices_but_reads_files(tmp_path: Path) -> None:
    from imgcache.errors import ImageError
    from imgcache.match.perceptual.decoding import read_image_file as read_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for special in (fifo, Path("/dev/zero")):
        started = time.monotonic()
        with pytest.raises(ImageError, match="not a regular file"):
            read_file(special, 1 << 20)
        assert time.monotonic() - started < 1
    (tmp_path / "ok.png").write_bytes(png())
    assert read_file(tmp_path / "ok.png", 1 << 20) == png()


# -- internal addresses ----------------------------------------------------------------------------


def test_internal_addresses_are_never_fetched(fetching: Served, fake: FakeOpenAI, internal: Recorder,
                                              public: Recorder) -> None:
    port = internal.server.server_address[1]
    closed = free_port()
    urls = [f"http://127.0.0.1:{port}/secret", f"http://localhost:{port}/secret", f"http://[::1]:{port}/secret",
            f"http://0.0.0.0:{port}/secret", f"http://2130706433:{port}/secret", f"http://127.1:{port}/secret",
            f"http://[::ffff:127.0.0.1]:{port}/secret", f"http://[::ffff:7f00:1]:{port}/image",
            "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/image", "http://[fd00::1]/image",
            f"{public.url}/redirect?to=http://127.0.0.1:{port}/secret",  # allowed host, internal target
            f"{public.url}/redirect?to={public.url}/redirect%3Fto%3Dhttp://localhost:{port}/image"]
    chats = fake.calls(CHAT)
    for url in urls:
        started = time.monotonic()
        refused(fetching.post(CHAT, chat_body(url), timeout=10))
        assert time.monotonic() - started < 3, url
    assert internal.seen == []
    assert fake.calls(CHAT) == chats
    # An open port and a closed one answer alike: no port scanner.
    open_answer = fetching.post(CHAT, chat_body(f"http://127.0.0.1:{port}/x")).json()
    closed_answer = fetching.post(CHAT, chat_body(f"http://127.0.0.1:{closed}/x")).json()
    assert open_answer == closed_answer
    # What the operator allows is fetched, and sent upstream as the bytes that were keyed.
    assert fetching.post(CHAT, chat_body(f"{public.url}/image")).status_code == 200
    sent = fake.requests[-1].body["messages"][0]["content"][1]["image_url"]["url"]
    assert sent == data_url(png(9)) and public.seen[-1] == "/image"


def test_slow_servers_cost_the_fetch_deadline_and_never_the_other_callers(
        fetching: Served, fake: FakeOpenAI, public: Recorder) -> None:
    # Headers trickled at 5 bytes a second, and a chain of 20 redirects of 0.5 s each: both
    # cut off at the 2 s deadline, then passed through uncached (the upstream gets the URL).
    chain = f"{public.url}/image"
    for _ in range(20):
        chain = f"{public.url}/redirect?delay=0.5&to={quote(chain, safe='')}"
    for url in (f"{public.url}/trickle", chain):
        started = time.monotonic()
        answer = fetching.post(CHAT, chat_body(url), timeout=30)
        assert time.monotonic() - started < 4.5, url
        assert answer.headers["x-imgcache"] in ("bypass; reason=unreadable-image", "error; reason=upstream")
        assert fake.requests[-1].path == CHAT or url in str(fake.requests[-1].path)

    # 70 callers whose images trickle: at most 16 fetches run at once, the rest are not fetched
    # (passed through at once), and other callers are answered meanwhile.
    def slow_caller(index: int) -> float:
        started = time.monotonic()
        fetching.post(CHAT, chat_body(f"{public.url}/trickle?{index}"), timeout=60)
        return time.monotonic() - started

    with ThreadPoolExecutor(70) as pool:
        slow = [pool.submit(slow_caller, index) for index in range(70)]
        time.sleep(0.5)
        for index in range(5):
            started = time.monotonic()
            answer = fetching.post("/v1/images/generations", {"model": "dall-e-2", "prompt": f"a fox {index}"})
            assert answer.status_code == 200 and time.monotonic() - started < 2.0
        durations = [future.result(60) for future in slow]
    assert max(durations) < 8
    assert len(public.fetches) < 70  # the fetches that found every slot busy were never made


def test_fetches_run_at_most_16_at_once_and_a_strangers_never_queue(public: Recorder) -> None:
    from imgcache.errors import ImageError
    from imgcache.fetch import MAX_CONCURRENT, FetchPolicy, fetch_image

    policy = FetchPolicy(private=False, allow=(f"{PUBLIC}/32",), queue=False)
    gate = threading.Barrier(40)

    def fetch(index: int) -> str:
        gate.wait()
        started = time.monotonic()
        try:
            fetch_image(f"{public.url}/trickle?{index}", policy=policy, max_bytes=1 << 20, timeout=2.0)
        except ImageError as exc:
            took = time.monotonic() - started
            return "busy" if "in flight" in str(exc) and took < 0.5 else "deadline" if 1.9 < took < 3 else str(exc)
        return "fetched"

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(fetch, range(40)))
    assert outcomes.count("deadline") == MAX_CONCURRENT == 16, outcomes
    assert outcomes.count("busy") == 40 - MAX_CONCURRENT
    assert len(public.fetches) == MAX_CONCURRENT


def test_the_library_fetch_has_one_deadline(public: Recorder) -> None:
    from imgcache.errors import ImageError
    from imgcache.fetch import fetch_image

    started = time.monotonic()
    with pytest.raises(ImageError, match="took over 1 s|timed out"):
        fetch_image(f"{public.url}/trickle", max_bytes=1 << 20, timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert fetch_image(f"{public.url}/image", max_bytes=1 << 20, timeout=5) == png(9)  # trusted: any address


# -- image bombs -----------------------------------------------------------------------------------


def test_image_bombs_are_refused_before_their_pixels_are_decoded(plain: Served, fake: FakeOpenAI) -> None:
    bomb = png_bomb()
    assert len(bomb) < 400_000
    form = {"model": "dall-e-2", "prompt": "add a lamp"}

    def edit(index: int) -> httpx.Response:
        return httpx.post(plain.url + "/v1/images/edits", data={**form, "prompt": f"lamp {index}"},
                          files={"image": ("bomb.png", bomb, "image/png")}, headers=AUTH, timeout=60)

    assert edit(0).status_code == 200  # warm: the decoding path's imports are loaded
    before = peak_rss_mb(plain.process.pid)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(edit, range(1, 5)))
    assert all(answer.status_code == 200 for answer in answers)  # the API's to judge, uncached
    grown = peak_rss_mb(plain.process.pid) - before
    assert grown < 100, f"peak RSS grew {grown:.0f} MB"  # decoded, 4 bombs would take 1.6 GB


# -- cached files' URLs ----------------------------------------------------------------------------


def test_file_urls_are_unguessable_expire_and_follow_invalidation(fake: FakeOpenAI, tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    body = {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "response_format": "url"}
    with serve(directory, fake.base_url, "--namespace-mode", "shared", "--namespace", "tenant",
               "--file-url-ttl", "3s") as proxy:
        assert proxy.post("/v1/images/generations", body).headers["x-imgcache"] == "miss"
        hit = proxy.post("/v1/images/generations", body)
        assert hit.headers["x-imgcache"].startswith("hit")
        url = hit.json()["data"][0]["url"]
        assert httpx.get(url).status_code == 200
        key = generate_request(body).key
        assert key not in url and "tenant" not in url  # the URL says nothing about the request
        token = url.rsplit("/", 1)[1]
        guesses = [f"/imgcache/files/tenant/{key}/0.png", f"/imgcache/files/{key}.png",
                   "/imgcache/files/" + FileUrls(os.urandom(32)).name(FileRef("tenant", key, 0, 2**40), "png"),
                   "/imgcache/files/" + token[:30] + ("A" if token[30] != "A" else "B") + token[31:]]
        for guess in guesses:
            assert httpx.get(proxy.url + guess).status_code == 404, guess
        secret = directory / ".proxy-file-url-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        # Another process on the same directory (another worker) serves the same URLs.
        with serve(directory, fake.base_url, "--namespace-mode", "shared", "--namespace", "tenant") as other:
            assert httpx.get(url.replace(proxy.url, other.url)).status_code == 200
        assert wait_until(lambda: httpx.get(url).status_code == 404, 10)  # expired after 3 s
        # Invalidated: a URL handed out before is not served any more.
        fresh = proxy.post("/v1/images/generations", body).json()["data"][0]["url"]
        assert httpx.get(fresh).status_code == 200
        with Cache("tenant", directory=directory, semantic=False) as cache:
            cache.delete(generate_request(body))
        assert wait_until(lambda: httpx.get(fresh).status_code == 404, 10)


# -- the upstream's base path ----------------------------------------------------------------------


def test_paths_never_leave_the_upstream_base_path(plain: Served, fake: FakeOpenAI) -> None:
    host, port = urlsplit(plain.url).netloc.split(":")
    before = len(fake.requests)
    for path in ("/v1/../secret", "/v1/%2e%2e/secret", "/v1/%2E%2e/secret", "/v1/models/..%2f..%2fsecret",
                 "/v1/models/%2F..%2F..%2Fsecret", "/v1/./models/../../secret", "/v1/models\\..\\..\\secret",
                 "/v1/images/generations/../../../secret"):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", path, headers=AUTH)  # sent as written: no client normalizes it
        response = connection.getresponse()
        assert response.status in (400, 404), path
        response.read()
        connection.close()
    assert len(fake.requests) == before
    assert httpx.get(plain.url + "/v1/models", headers=AUTH).status_code == 200  # and the rest still goes


# -- request heads ---------------------------------------------------------------------------------


def _send_head(url: str, head: bytes, *, chunk: int = 1 << 16) -> bytes:
    """Send ``head`` (until the server stops reading) and return what it answered."""
    host, port = urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start:start + chunk])
        except OSError as exc:
            assert exc.errno in (errno.EPIPE, errno.ECONNRESET)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
        return answer


def test_request_heads_are_bounded(plain: Served) -> None:
    bomb = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bomb: " + b"a" * (16 << 20) + b"\r\n\r\n"
    started = time.monotonic()
    assert _send_head(plain.url, bomb).startswith(b"HTTP/1.1 431 ")
    assert time.monotonic() - started < 5
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"
    assert _send_head(plain.url, many).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /v1/" + b"a" * (128 << 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _send_head(plain.url, long_url).startswith(b"HTTP/1.1 414 ")
    # Ten unfinished heads of 1 MiB each: refused after the limit, so they hold nearly nothing.
    before = peak_rss_mb(plain.process.pid)
    unfinished = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bomb: " + b"a" * (1 << 20)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: _send_head(plain.url, unfinished), range(10)))
    assert all(answer.startswith(b"HTTP/1.1 431 ") for answer in answers)
    assert peak_rss_mb(plain.process.pid) - before < 20
    assert httpx.get(plain.url + "/healthz").status_code == 200


def test_a_head_that_never_ends_is_cut_off(fake: FakeOpenAI, tmp_path: Path) -> None:
    with Cache("slow", directory=tmp_path, semantic=False) as cache, \
            ProxyServer(ProxyConfig(upstream=fake.base_url), cache, timeout_keep_alive=1) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            for _ in range(10):  # a byte now and then: still never a whole head
                time.sleep(0.2)
                try:
                    sock.sendall(b"a")
                except OSError:
                    break
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as idle:
            assert idle.recv(65536).startswith(b"HTTP/1.1 408 ")  # a connection that sends nothing


def test_a_body_that_never_ends_is_cut_off(fake: FakeOpenAI, tmp_path: Path) -> None:
    with Cache("slow", directory=tmp_path, semantic=False) as cache, \
            ProxyServer(ProxyConfig(upstream=fake.base_url, body_timeout=1), cache) as proxy:
        for path in ("/v1/images/generations", "/v1/models"):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{" % path.encode())
                started = time.monotonic()
                answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3, answer[:200]


# -- hostile JSON --------------------------------------------------------------------------------------


def test_hostile_json_is_a_clean_400_before_any_upstream_call(plain: Served, fake: FakeOpenAI) -> None:
    before = fake.calls()
    deep = "[" * 100_000 + "]" * 100_000
    nested = "{\"a\": " * 100 + "1" + "}" * 100  # parses, but nests beyond the keying limit
    generation = '{"model": "dall-e-3", "prompt": %s%s}'
    chat = '{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": %s}, ' \
           '{"type": "image_url", "image_url": {"url": "%s"}}]}]%s}' % ("%s", data_url(png(5)), "%s")
    bodies = {
        "/v1/images/generations": [deep, generation % (deep, ""), generation % ('"x"', ', "n": ' + "9" * 5000),
                                   generation % ('"a lone \\ud800 surrogate"', ""),
                                   generation % ('"x"', ', "extra": ' + nested),
                                   generation % ('"x"', ', "seed": ' + "9" * 200)],
        CHAT: [deep, chat % ('"a lone \\udc00"', ""), chat % ('"x"', ', "metadata2": ' + nested),
               chat % ('"x"', ', "seed": ' + "9" * 200)],
    }
    for path, raws in bodies.items():
        for raw in raws:
            answer = httpx.post(plain.url + path, content=raw.encode(),
                                headers={**AUTH, "content-type": "application/json"})
            assert answer.status_code == 400, (path, raw[:80], answer.text[:200])
            assert answer.json()["error"]["message"]
            assert answer.headers["x-imgcache"] in ("error; reason=malformed-json", "error; reason=beyond-limits")
    assert fake.calls() == before
    assert httpx.get(plain.url + "/healthz").status_code == 200
