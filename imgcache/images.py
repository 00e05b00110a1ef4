"""Image inputs of vision requests: what they are keyed by, and how they are read.

An :class:`ImageInput` is one image of a request, keyed by the sha256 of its bytes (the exact
match). Its perceptual :class:`~imgcache.match.perceptual.Fingerprint` is made only when it is
needed, on an exact miss: a repeat of the same bytes never decodes the image.

Inputs come as bytes, a path, a PIL image, a ``data:`` URL, or a remote ``http(s)`` URL. A
remote URL is fetched once, with a size limit, one deadline and the address policy of
:mod:`imgcache.fetch`, so that the cache keys the bytes the answer is made from; the adapters then send those same bytes upstream
(as a data URL), so the API never sees a different image than the one that was keyed. With
fetching turned off a remote image is keyed by its URL: exact matches only, and the answer is
trusted to stay right for as long as the URL serves the same image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ImageError, InvalidRequest, SourceRefused

if TYPE_CHECKING:
    from .match.config import VisionOptions
    from .match.perceptual import Fingerprint

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.ASCII)


@dataclass(eq=False)
class ImageInput:
    """One image of a request. ``data`` is None when the image is keyed by its URL only."""

    sha256: str
    """Digest of the bytes (or, for a PIL image, of its mode, size and pixels; for a URL-keyed
    image, of the URL): the exact key."""
    data: Any = field(repr=False)
    """bytes or a PIL image, or None."""
    url: str | None = None
    """The remote URL the bytes came from (or that keys the image)."""
    error: ImageError | None = None
    """Why the image could not be read (then the call passes through uncached)."""
    _fingerprint: Fingerprint | None = field(default=None, repr=False)

    @property
    def keyed_by_url(self) -> bool:
        return self.data is None and self.error is None

    @classmethod
    def unreadable(cls, error: ImageError, url: str | None = None) -> ImageInput:
        """An input that could not be read: a key that matches nothing, and its error."""
        return cls(hashlib.sha256(os.urandom(16)).hexdigest(), None, url, error)

    def fingerprint(self, options: VisionOptions) -> Fingerprint:
        """The perceptual fingerprint, made once; ImageError if the image cannot be read."""
        if self.error is not None:
            raise self.error
        if self._fingerprint is None:
            if self.data is None:
                raise ImageError(f"image {self.url!r} is keyed by its URL and was not fetched")
            from .match.perceptual import fingerprint

            self._fingerprint = fingerprint(self.data, max_pixels=options.max_pixels,
                                            max_bytes=options.max_image_bytes,
                                            max_decode_bytes=options.max_decode_bytes)
        return self._fingerprint

    @property
    def fingerprinted(self) -> Fingerprint | None:
        return self._fingerprint

    def as_bytes(self) -> bytes:
        if not isinstance(self.data, bytes):
            raise TypeError("this image input holds no bytes")
        return self.data


def image_input(value: Any, options: VisionOptions) -> ImageInput:
    """An :class:`ImageInput` from bytes, a path, a PIL image, or a data / http(s) URL string.

    A ``str`` is a URL if it starts with ``data:``, ``http://`` or ``https://``, else a path
    (read only with ``options.read_paths``). Nothing is decoded here. An input that cannot be
    read (a file that is not there, a malformed data URL, a failed fetch, over
    ``options.max_image_bytes``) comes back :meth:`ImageInput.unreadable`; a value of another
    type raises InvalidRequest, a source the options refuse SourceRefused.
    """
    try:
        return _read(value, options)
    except ImageError as exc:
        return ImageInput.unreadable(exc, value if isinstance(value, str) and "://" in value[:9] else None)


def _read(value: Any, options: VisionOptions) -> ImageInput:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(value), options)
    scheme = value[:8].lower() if isinstance(value, str) else ""
    if scheme.startswith("data:"):
        return _from_bytes(decode_data_url(value, options.max_image_bytes), options)
    if scheme.startswith(("http://", "https://")):
        return remote_image(value, options)
    if isinstance(value, (str, os.PathLike)):
        if not options.read_paths:
            raise SourceRefused("an image URL must be a data: URL or an http(s) URL; this server "
                                "reads no path or file: URL for its callers")
        from .match.perceptual.decoding import read_image_file

        return _from_bytes(read_image_file(value, options.max_image_bytes), options)
    if _is_pil_image(value):
        image = _canonical_pil(value)
        digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
        try:
            digest.update(image.tobytes())
        except Exception as exc:
            raise ImageError(f"cannot read PIL image: {exc}") from exc
        return ImageInput(digest.hexdigest(), image)
    raise InvalidRequest(f"not an image input: {type(value).__name__} (bytes, a path, a PIL image"
                         " or a data/http(s) URL)")


def remote_image(url: str, options: VisionOptions) -> ImageInput:
    """A remote image: fetched (see :func:`imgcache.fetch.fetch_image`), or keyed by its URL
    when ``options.fetch_remote`` is off."""
    if not options.fetch_remote:
        return image_reference(url)
    from .fetch import fetch_image

    data = fetch_image(url, policy=options.fetch_policy, max_bytes=options.max_image_bytes,
                       timeout=options.fetch_timeout)
    image = _from_bytes(data, options)
    image.url = url
    return image


def image_reference(reference: str) -> ImageInput:
    """An image known only by a name that the API resolves (a URL not fetched, a file id):
    keyed by that name, matched exactly only."""
    return ImageInput(hashlib.sha256(f"url:{reference}".encode()).hexdigest(), None, reference)


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a base64 ``data:`` URL; ImageError if it is malformed or too large."""
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageError("not a base64 data URL (data:<type>;base64,<data>)")
    payload = url[match.end():]
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageError(f"data URL image is over {max_bytes:,} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"data URL is not valid base64: {exc}") from exc


def data_url(data: bytes) -> str:
    """A data URL for image bytes, typed by their signature (what the API checks)."""
    return f"data:{sniff_type(data)};base64,{base64.b64encode(data).decode()}"


def sniff_type(data: bytes) -> str:
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def _from_bytes(data: bytes, options: VisionOptions) -> ImageInput:
    if len(data) > options.max_image_bytes:
        raise ImageError(f"image input is over max_image_bytes={options.max_image_bytes:,}")
    if not data:
        raise ImageError("empty image input")
    return ImageInput(hashlib.sha256(data).hexdigest(), data)


def _canonical_pil(image: Any) -> Any:
    """A PIL image whose mode, size and pixels say everything it shows, so that they can key
    it: EXIF orientation applied, palette and transparency resolved into RGBA pixels."""
    from PIL import ImageOps

    try:
        if image.getexif().get(0x0112, 1) != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode in ("P", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
    except Exception as exc:
        raise ImageError(f"cannot read PIL image: {exc}") from exc
    return image


def _is_pil_image(value: Any) -> bool:
    module = type(value).__module__
    if not module.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(value, Image.Image)
