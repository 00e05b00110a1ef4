"""``GET /v1/models`` and ``GET /v1/models/<id>``: the fixed list of models the fake knows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import ApiError, RecordedRequest, Reply, json_reply

if TYPE_CHECKING:
    from .server import FakeOpenAI

MODELS = (
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
)


def list_models(fake: FakeOpenAI, request: RecordedRequest) -> Reply:
    return json_reply({"object": "list", "data": [_model(m) for m in MODELS]})


def get_model(model_id: str) -> Reply:
    if model_id not in MODELS:
        raise ApiError(
            404,
            f"The model '{model_id}' does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return json_reply(_model(model_id))


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "fake-openai"}
