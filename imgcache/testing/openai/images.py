"""``POST /v1/images/generations`` and ``POST /v1/images/edits`` (multipart).

Each call draws new pixels (the call number is part of the seed), at the requested size or
the server's ``image_size``; ``gpt-image`` models get the API's usage block.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from .media import ImageInfo, fake_png, image_input_tokens, read_image
from .protocol import (
    ApiError,
    FormFile,
    RecordedRequest,
    Reply,
    count_tokens,
    json_object,
    json_reply,
    optional_int,
    require,
)

if TYPE_CHECKING:
    from .server import FakeOpenAI

DEFAULT_SIZE = (1024, 1024)
MAX_SIDE = 4096
# Output tokens per image that the real API bills for a 1024x1024 GPT image.
_IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
_UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")  # what images.edit accepts


def generations(fake: FakeOpenAI, request: RecordedRequest) -> Reply:
    body = json_object(request)
    return json_reply(_payload(fake, body, seed=body))


def edits(fake: FakeOpenAI, request: RecordedRequest) -> Reply:
    """Like generations, from a multipart form with input images (and maybe a mask).

    Uploads are checked as the API checks them (declared type, then the bytes); where the
    API differs by model (several images, mask shape, sizes) the fake is lenient.
    """
    if request.form is None:
        raise ApiError(
            400,
            "Invalid Content-Type header (expected multipart/form-data).",
            code="invalid_content_type",
        )
    files = request.form.get("image", []) + request.form.get("image[]", [])
    uploads = [value for value in files if isinstance(value, FormFile)]
    if not uploads:
        raise ApiError(
            400,
            "Missing required parameter: 'image'.",
            param="image",
            code="missing_required_parameter",
        )
    images = [_read_upload(upload, "image") for upload in uploads]
    masks = [v for v in request.form.get("mask", []) if isinstance(v, FormFile)]
    mask = _read_upload(masks[-1], "mask").digest if masks else None
    params = _form_params(request.form)
    seed = {"fields": params, "images": [image.digest for image in images], "mask": mask}
    # gpt-image-1's input-image formula is not in the pricing table: gpt-4o's stands in.
    counted = sum(image_input_tokens(image, "high", "gpt-4o") for image in images)
    return json_reply(_payload(fake, params, seed=seed, input_image_tokens=counted))


def _payload(
    fake: FakeOpenAI, body: dict[str, Any], *, seed: Any, input_image_tokens: int = 0
) -> dict[str, Any]:
    """Validate an images request and answer it: ``seed`` (with the call number) picks
    the pixels; ``input_image_tokens`` are the input images' tokens (edits).
    """
    prompt = require(body, "prompt", str)
    if not prompt:
        raise ApiError(
            400, "Invalid 'prompt': empty string.", param="prompt", code="empty_string"
        )
    model = str(body.get("model") or "dall-e-2")
    gpt_image = model.startswith("gpt-image")
    n = optional_int(body, "n", 1, 1, 10)
    if model == "dall-e-3" and n != 1:
        raise ApiError(400, "You must provide n=1 for this model.", param="n")
    response_format = body.get("response_format")
    if response_format is not None and gpt_image:
        raise ApiError(
            400,
            "Unknown parameter: 'response_format'.",
            param="response_format",
            code="unknown_parameter",
        )
    if response_format not in (None, "url", "b64_json"):
        raise ApiError(
            400,
            f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
            param="response_format",
            code="invalid_value",
        )
    if body.get("stream"):
        raise ApiError(
            400, "Streaming image generation is not supported by FakeOpenAI.", param="stream"
        )
    requested = _parse_size(body.get("size"))  # validated even when overridden
    width, height = fake.image_size or requested
    quality = body.get("quality") or "auto"
    quality = "high" if quality == "auto" and gpt_image else quality
    background = body.get("background") or "auto"
    background = "opaque" if background == "auto" else background

    call = fake._next_call()
    data = []
    for index in range(n):
        material = json.dumps({"call": call, "index": index, "request": seed}, sort_keys=True)
        transparent = gpt_image and background == "transparent"
        png = fake_png(width, height, material, alpha=transparent)
        if response_format == "url":
            file_id = f"img-{uuid.uuid4().hex}"
            with fake._lock:
                fake._files[file_id] = png
            item: dict[str, Any] = {"url": f"{fake.url}/files/{file_id}.png"}
        else:
            item = {"b64_json": base64.b64encode(png).decode("ascii")}
        if model == "dall-e-3":
            item["revised_prompt"] = f"A fake rendering of: {prompt}"
        data.append(item)

    payload: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        text_tokens = count_tokens(prompt)
        output_tokens = _IMAGE_TOKENS.get(quality, _IMAGE_TOKENS["medium"]) * n
        input_tokens = text_tokens + input_image_tokens
        payload.update(
            background=background,
            output_format=body.get("output_format") or "png",  # bytes are PNG regardless
            quality=quality,
            size=f"{width}x{height}",
            usage={
                "input_tokens": input_tokens,
                "input_tokens_details": {
                    "image_tokens": input_image_tokens,
                    "text_tokens": text_tokens,
                },
                "output_tokens": output_tokens,
                "output_tokens_details": {"image_tokens": output_tokens, "text_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        )
    return payload


def _parse_size(size: Any) -> tuple[int, int]:
    """Accept any ``WxH`` up to 4096 per side (more lenient than the real API) or ``auto``."""
    if size is None or size == "auto":
        return DEFAULT_SIZE
    try:
        width, height = (int(part) for part in str(size).lower().split("x"))
    except ValueError:
        width = height = 0
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ApiError(
            400,
            f"Invalid value: '{size}'. Expected a size like '1024x1024'.",
            param="size",
            code="invalid_value",
        )
    return width, height


def _read_upload(upload: FormFile, param: str) -> ImageInfo:
    """A multipart image upload, checked like the API checks it: declared type, then bytes."""
    if upload.content_type not in _UPLOAD_TYPES:
        raise ApiError(
            400,
            f"Invalid file '{param}': unsupported mimetype ('{upload.content_type}'). Supported "
            "file formats are 'image/jpeg', 'image/png', and 'image/webp'.",
            param=param,
            code="unsupported_file_mimetype",
        )
    return read_image(bytes(upload))


def _form_params(form: dict[str, list[str | FormFile]]) -> dict[str, Any]:
    """The text fields of a form (last value wins), with ``n`` as an int and ``stream`` a bool."""
    params: dict[str, Any] = {
        name: values[-1] for name, values in form.items() if isinstance(values[-1], str)
    }
    if "n" in params:
        try:
            params["n"] = int(params["n"])
        except ValueError:
            raise ApiError(
                400, "Invalid type for 'n': expected an integer.", param="n", code="invalid_type"
            ) from None
    if "stream" in params:
        params["stream"] = params["stream"].lower() in ("true", "1")
    return params
