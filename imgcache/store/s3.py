"""S3 tier (or any S3-compatible store reachable through ``endpoint_url``).

Logical key ``"ns/e/<id>"`` is stored as object ``"<prefix>ns/e/<id>"``.

S3 has no per-object TTL, so ``ttl`` is ignored: the front checks expiry from the entry
manifest, and a bucket lifecycle rule on ``<prefix>`` should delete objects older than the
longest TTL in use so that the bucket does not grow forever.

Credentials come from boto3's usual chain (environment, shared config, instance role). The
client makes one attempt per call: retries and backoff belong to the front's breaker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError, TierTimeout, TierUnavailable
from .base import MISSING, BaseTier, _Missing, split_key

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer


class S3Tier(BaseTier):
    name = "s3"
    scope = "fleet"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        prefix: str = "imgcache/",
        region_name: str | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
    ) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise ConfigError("the S3 tier needs boto3: pip install 'imgcache[s3]'") from exc
        self._boto3 = boto3
        self._botocore_errors = botocore.exceptions
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._config = botocore.config.Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            tcp_keepalive=True,
        )
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3Tier s3://{self.bucket}/{self.prefix}>"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use.

        boto3 clients are thread-safe but creating one is not, hence the lock and the
        private session.
        """
        client = self._client
        if client is None:
            with self._client_lock, self._errors():
                if self._client is None:
                    session = self._boto3.session.Session(region_name=self.region_name)
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url, config=self._config
                    )
                client = self._client
        return client

    def object_key(self, key: str) -> str:
        """The S3 object key that holds logical ``key``."""
        namespace, kind, ident = split_key(key)
        return f"{self.prefix}{namespace}/{kind}/{ident}"

    def get(self, key: str) -> bytes | _Missing:
        name = self.object_key(key)
        with self._errors():
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            except self._botocore_errors.ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return MISSING
                raise
            body = response["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        name = self.object_key(key)
        with self._errors():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=value)

    def contains(self, key: str) -> bool:
        """Whether the object exists (a HEAD request: no body transferred)."""
        with self._errors():
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            except self._botocore_errors.ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    def delete(self, key: str) -> None:
        name = self.object_key(key)
        with self._errors():
            self.client.delete_object(Bucket=self.bucket, Key=name)  # absent: still 204

    def ping(self) -> None:
        with self._errors():
            self.client.head_bucket(Bucket=self.bucket)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def blob_url(self, key: str, data: bytes, lifetime: int) -> str | None:
        """A presigned URL, once the object is there (its write may still be queued, or may
        have failed: then it is written now)."""
        if not self.contains(key):
            self.set(key, data)
        return self.presigned_url(key, lifetime)

    def presigned_url(self, key: str, expires_in: int) -> str:
        """A GET URL for ``key`` valid for ``expires_in`` seconds (clamped to 1 s .. 7 days).

        Signing is local: the URL is returned whether or not the object exists.
        """
        expires = max(1, min(int(expires_in), _MAX_PRESIGN_SECONDS))
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        with self._errors():
            return self.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate botocore errors into TierError: the one place this tier does so."""
        errors = self._botocore_errors
        try:
            yield
        except (errors.ConnectTimeoutError, errors.ReadTimeoutError) as exc:
            raise TierTimeout(self.name, str(exc)) from exc
        except errors.ClientError as exc:
            raise TierUnavailable(self.name, f"{_error_code(exc)}: {exc}") from exc
        except (errors.BotoCoreError, OSError) as exc:
            raise TierUnavailable(self.name, str(exc)) from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
