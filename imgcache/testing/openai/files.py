"""Files the fake serves over plain GET: generated images and ``host_file`` content.

``GET /files/<id>.png`` is the target of ``response_format="url"`` (until ``expire_urls``);
``GET /hosted/<name>`` stands for a third-party host, with an optional delay and zero padding
streamed up to a given size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import ApiError, Reply

if TYPE_CHECKING:
    from .server import FakeOpenAI

HOSTED_NAME = re.compile(r"[A-Za-z0-9._-]+")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Hosted:
    data: bytes
    content_type: str
    delay: float
    size: int


def get_file(fake: FakeOpenAI, name: str) -> Reply:
    with fake._lock:
        png = fake._files.get(name.removesuffix(".png"))
    if png is None:
        raise ApiError(404, "The requested file does not exist or its URL has expired.")
    return Reply(200, png, content_type="image/png")


def get_hosted(fake: FakeOpenAI, name: str) -> Reply:
    with fake._lock:
        hosted = fake._hosted.get(name)
    if hosted is None:
        raise ApiError(404, "The requested file does not exist.")
    if hosted.delay > 0:
        time.sleep(hosted.delay)
    if hosted.size == len(hosted.data):
        return Reply(200, hosted.data, content_type=hosted.content_type)
    body = _padded(hosted.data, hosted.size)
    return Reply(200, body, content_type=hosted.content_type, length=hosted.size)


def _padded(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` then zero bytes up to ``size``, in chunks."""
    yield data
    left = size - len(data)
    zeros = bytes(min(left, _CHUNK))
    while left > 0:
        yield zeros[: min(left, _CHUNK)]
        left -= _CHUNK
