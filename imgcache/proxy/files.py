"""The URLs of cached images: unguessable, expiring, and saying nothing about the request.

A hit asked for as ``response_format="url"`` gets ``<proxy>/imgcache/files/<token>.<ext>``
for each image (upstream URLs expire within the hour, so the proxy serves the stored bytes).
The token is the namespace, the entry's key, the image's index and an expiry, encrypted and
authenticated with AES-GCM (``cryptography``) under the proxy's secret:

* it cannot be made without the secret: knowing a prompt and its parameters (hence the entry
  key) gives no URL, and one leaked URL shows neither the namespace nor the key, so it cannot
  be edited into another entry's;
* it expires: at the entry's expiry, and at most :attr:`ProxyConfig.file_url_ttl` after it
  was handed out (an hour by default, as the API's own URLs);
* serving it reads the entry through the namespace's cache, so an invalidated result (or an
  alias of one) is not served even through a URL handed out before.

The secret is the operator's (``IMGCACHE_PROXY_SECRET``, or :attr:`ProxyConfig.file_secret`),
else one the proxy generates and keeps where every worker sharing the cache finds it: in Redis,
else in the local directory (a file readable by its user only). With neither (S3 alone) each
process makes its own, and a URL is served only by the process that made it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cache import Cache

log = logging.getLogger("imgcache.proxy")

SECRET_ENV = "IMGCACHE_PROXY_SECRET"
_VERSION = b"\x01"
_NONCE = 12
_HEAD = struct.Struct(">QB")  # expiry (unix seconds), image index
_NAME = re.compile(r"([A-Za-z0-9_-]{60,400})\.[a-z]{2,4}")
_SECRET_NAME = "proxy-file-url-secret"


@dataclass(frozen=True)
class FileRef:
    """What a file URL points at."""

    namespace: str
    key: str
    index: int
    expires: int


class FileUrls:
    """Seals and opens file URL tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        # One key for this purpose only, whatever else the operator's secret is used for.
        self._aead = AESGCM(hashlib.sha256(b"imgcache file urls v1\0" + secret).digest())

    def name(self, ref: FileRef, extension: str) -> str:
        """The last path segment of the URL of ``ref``: ``<token>.<extension>``."""
        plain = _HEAD.pack(ref.expires, ref.index) + bytes.fromhex(ref.key) + ref.namespace.encode()
        nonce = os.urandom(_NONCE)
        sealed = _VERSION + nonce + self._aead.encrypt(nonce, plain, _VERSION)
        return f"{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode()}.{extension}"

    def open(self, name: str, now: float | None = None) -> FileRef | None:
        """The reference behind a URL's last segment; None if it is not one of this secret's,
        was altered, or has expired."""
        from cryptography.exceptions import InvalidTag

        found = _NAME.fullmatch(name)
        if found is None:
            return None
        token = found[1]
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE + 16:
            return None
        try:
            plain = self._aead.decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:], _VERSION)
        except InvalidTag:
            return None
        expires, index = _HEAD.unpack_from(plain)
        key, namespace = plain[_HEAD.size:_HEAD.size + 32].hex(), plain[_HEAD.size + 32:].decode()
        if expires <= (time.time() if now is None else now):
            return None
        return FileRef(namespace, key, index, expires)


def file_urls(cache: Cache, configured: str | None) -> FileUrls:
    """The proxy's :class:`FileUrls`, with the secret found as the module doc says."""
    secret = configured or os.environ.get(SECRET_ENV)
    if secret:
        return FileUrls(secret.encode())
    fresh = secrets.token_bytes(32)
    shared = cache.shared_secret(_SECRET_NAME, fresh)
    if shared is None:
        log.warning("imgcache proxy: no shared place for the file URL secret: image URLs are served "
                    "only by the process that made them; set %s to share one", SECRET_ENV)
    return FileUrls(shared or fresh)
