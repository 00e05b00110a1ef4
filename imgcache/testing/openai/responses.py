"""``POST /v1/responses``: plain, or streamed as ``response.*`` events."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .protocol import RecordedRequest, Reply, count_tokens, json_object, json_reply, require
from .vision import answer_pieces, fake_answer, read_images, scan_messages

if TYPE_CHECKING:
    from .server import FakeOpenAI


def responses(fake: FakeOpenAI, request: RecordedRequest) -> Reply:
    body = json_object(request)
    model = require(body, "model", str)
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = require({"input": items}, "input", list)
    texts, refs = scan_messages(items, "input")
    digests, images_tokens = read_images(fake, refs, model)
    instructions = body.get("instructions")
    call = fake._next_call()
    answer = fake_answer(call, texts, digests)
    input_tokens = sum(count_tokens(t) for t in texts) + images_tokens
    input_tokens += count_tokens(instructions) if isinstance(instructions, str) else 0
    output_tokens = count_tokens(answer)
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
        return Reply(200, _response_events(response), content_type="text/event-stream")
    return json_reply(response)


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
    for piece in answer_pieces(text_part["text"]):
        yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    yield event("response.output_text.done", **where, text=text_part["text"], logprobs=[])
    yield event("response.content_part.done", **where, part=text_part)
    yield event("response.output_item.done", output_index=0, item=message)
    yield event("response.completed", response=response)
