"""What the fake's requests and replies look like, and the checks every endpoint shares.

Recorded requests (with multipart forms parsed), replies, errors shaped like the API's
(``ApiError``) and the parameter checks and token estimate the endpoints have in common.
"""

from __future__ import annotations

import email.policy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self


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

    def __new__(cls, data: bytes, filename: str | None, content_type: str) -> Self:
        self = super().__new__(cls, data)
        self.filename = filename
        self.content_type = content_type
        return self


def parse_form(content_type: str, raw: bytes) -> dict[str, list[str | FormFile]] | None:
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


@dataclass
class Reply:
    status: int
    body: bytes | Iterable[bytes]  # an iterable is sent with chunked encoding
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # for an iterable body: sent with Content-Length, not chunked


class ApiError(Exception):
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

    def reply(self) -> Reply:
        return Reply(
            self.status, json.dumps({"error": self.payload}).encode(), headers=self.headers
        )


def json_object(request: RecordedRequest) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    if not isinstance(request.body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. "
            "(HINT: The OpenAI API expects a JSON payload.)",
        )
    return request.body


def json_reply(payload: Any) -> Reply:
    return Reply(200, json.dumps(payload).encode())


def require(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        raise ApiError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    if not isinstance(value, kind):
        expected = {"str": "a string", "list": "an array"}.get(kind.__name__, kind.__name__)
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected {expected}, but got "
            f"{type(value).__name__} instead.",
            param=name,
            code="invalid_type",
        )
    return value


def optional_int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(
            400, f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type"
        )
    if value < low:
        raise ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value "
            f">= {low}, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value "
            f"<= {high}, but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def count_tokens(text: str) -> int:
    """The fake's token estimate for a text: a token per four characters, at least one."""
    return max(1, len(text) // 4)
