"""What chat completions and responses share: reading the input, and the fake answer.

The user texts and image parts of ``messages`` / ``input``; the images loaded (base64 data
URLs, or http(s) URLs the server downloads itself from loopback hosts only), checked and
counted; and the answer ``fake answer #<call> for: <last user text> [images: <digests>]``.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import re
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .media import MAX_IMAGE_BYTES, image_input_tokens, read_image
from .protocol import ApiError

if TYPE_CHECKING:
    from .server import FakeOpenAI

_DETAILS = ("low", "high", "auto", "original")
_DATA_URL = re.compile(r"data:(image/[\w.+-]+);base64,(.*)", re.DOTALL)


@dataclass(frozen=True)
class ImageRef:
    """An image part of a chat or responses request, before it is loaded."""

    url: Any
    detail: Any
    param: str  # where it sits in the request, for error messages


def scan_messages(items: list[Any], field: str) -> tuple[list[str], list[ImageRef]]:
    """Texts of the user messages, in order, and the image parts of all messages.

    Serves chat ``messages`` (``text`` and ``image_url`` parts) and responses ``input``
    (``input_text`` and ``input_image`` parts); items without a role (tool output) are skipped.
    """
    texts: list[str] = []
    refs: list[ImageRef] = []
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
                refs.append(ImageRef(spec.get("url"), detail, f"{where}.image_url.url"))
            elif kind == "input_image":  # responses: {"image_url": ..., "detail": ...}
                if part.get("file_id") and not part.get("image_url"):
                    raise ApiError(
                        400,
                        "FakeOpenAI does not store files: give input_image an image_url.",
                        param=f"{where}.file_id",
                        code="invalid_value",
                    )
                detail = part.get("detail") or "auto"
                refs.append(ImageRef(part.get("image_url"), detail, f"{where}.image_url"))
            elif kind in ("text", "input_text", "output_text"):
                text.append(str(part.get("text", "")))
        if message.get("role") == "user":
            texts.append(" ".join(text))
    return texts, refs


def read_images(fake: FakeOpenAI, refs: list[ImageRef], model: str) -> tuple[list[str], int]:
    """Load every image of a request: their digests, in order, and their input tokens."""
    digests, tokens = [], 0
    for ref in refs:
        if ref.detail not in _DETAILS:
            raise ApiError(
                400,
                f"Invalid value: '{ref.detail}'. Supported values are: 'low', 'high', "
                "'auto' and 'original'.",
                param=ref.param.rsplit(".", 1)[0] + ".detail",
                code="invalid_value",
            )
        image = read_image(_image_bytes(fake, ref))
        digests.append(image.digest)
        tokens += image_input_tokens(image, ref.detail, model)
    return digests, tokens


def _image_bytes(fake: FakeOpenAI, ref: ImageRef) -> bytes:
    """The bytes behind an image URL: a base64 data URL, or a download (loopback only)."""
    url = ref.url
    if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
        return _download(url, fake.fetch_timeout)

    def invalid(got: str) -> ApiError:
        return ApiError(
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


def _download(url: str, timeout: float) -> bytes:
    """Fetch an image URL as the API would, from loopback hosts only (no network)."""
    failed = ApiError(400, f"Error while downloading {url}.", param="url", code="invalid_value")
    if not _is_loopback(urlsplit(url).hostname or ""):
        failed.payload["message"] += " (FakeOpenAI downloads from loopback hosts only.)"
        raise failed
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
    try:
        with opener.open(url, timeout=timeout) as response:
            data: bytes = response.read(MAX_IMAGE_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise failed from exc
    return data


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fake_answer(call: int, texts: list[str], digests: list[str]) -> str:
    """``fake answer #<call> for: <last user text>`` plus ``[images: <d1>, <d2>]`` if any."""
    answer = f"fake answer #{call} for: {texts[-1] if texts else ''}"
    if digests:
        answer += f" [images: {', '.join(digests)}]"
    return answer


def answer_pieces(answer: str) -> list[str]:
    """The answer cut into streaming deltas, one word each (spaces kept)."""
    words = answer.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]
