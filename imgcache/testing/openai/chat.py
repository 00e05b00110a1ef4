"""``POST /v1/chat/completions``: plain, or streamed as ``chat.completion.chunk`` events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .protocol import (
    ApiError,
    RecordedRequest,
    Reply,
    count_tokens,
    json_object,
    json_reply,
    optional_int,
    require,
)
from .vision import answer_pieces, fake_answer, read_images, scan_messages

if TYPE_CHECKING:
    from .server import FakeOpenAI


def chat_completions(fake: FakeOpenAI, request: RecordedRequest) -> Reply:
    body = json_object(request)
    model = body.get("model")
    if not model:
        raise ApiError(400, "you must provide a model parameter")
    messages = require(body, "messages", list)
    if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ApiError(
            400,
            "Invalid 'messages': expected a non-empty array of messages with a 'role'.",
            param="messages",
            code="invalid_value",
        )
    n = optional_int(body, "n", 1, 1, 128)
    texts, refs = scan_messages(messages, "messages")
    digests, images_tokens = read_images(fake, refs, str(model))
    call = fake._next_call()
    answer = fake_answer(call, texts, digests)
    prompt_tokens = sum(count_tokens(t) for t in texts) + images_tokens
    completion_tokens = count_tokens(answer) * n
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
        return Reply(200, events, content_type="text/event-stream")
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": answer, "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
        for i in range(n)
    ]
    return json_reply({**base, "object": "chat.completion", "choices": choices, "usage": usage})


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
        for piece in answer_pieces(answer):
            yield event([choice(i, {"content": piece})])
        yield event([choice(i, {}, "stop")])
    if usage is not None:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"
