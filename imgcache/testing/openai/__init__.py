"""A local stand-in for the OpenAI HTTP API, for tests, benchmarks and demos.

``FakeOpenAI`` is a real HTTP server on loopback (standard library only) that the
official ``openai`` SDK can talk to::

    with FakeOpenAI(image_size=(16, 16)) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        client.images.generate(prompt="a cat")

Every generated image differs from the previous one even for identical requests
(like the real API), so a test can tell a cached answer from a fresh one.

Endpoints: ``POST /v1/images/generations``, ``POST /v1/images/edits`` (multipart, one
``image`` or several ``image[]``), ``POST /v1/chat/completions`` and ``POST /v1/responses``
(both optionally streamed), ``GET /v1/models[/<id>]``, plus ``GET /files/<id>.png`` (the
target of ``response_format="url"``) and ``GET /hosted/<name>`` (see ``host_file``).

Vision answers read like ``fake answer #3 for: what is this? [images: 1f0c9a7b2d4e, 77ab...]``:
the call number, the last user text and, when images were sent, each image's
``image_digest`` (the first 12 hex digits of the SHA-256 of its bytes) in order, so a test
can tell which image an answer was made for. Images arrive as base64 data URLs or as http(s)
URLs, which the server downloads itself, from loopback hosts only (``host_file`` serves
bytes there). Images that are not PNG, JPEG, GIF or WebP, or bad data URLs, get the API's
400 errors; ``usage`` counts images with ``imgcache.pricing.image_tokens``. Pillow (the test
extra) is imported lazily to read image sizes; without it images are checked by signature
only and counted as 85 tokens.

Every request, including the server's own downloads of hosted files, is recorded
(``requests``, ``calls(path)``); ``fail_next(..., path=...)`` works for every endpoint.

Modules: ``server`` (HTTP plumbing, the ``FakeOpenAI`` class and its routing), ``protocol``
(recorded requests, replies, API-shaped errors, shared parameter checks), ``faults``
(``fail_next``), ``media`` (fake PNGs; checking and counting received images), ``files``
(image URLs and hosted files), ``images``, ``chat``, ``responses``, ``models`` (the
endpoints), ``vision`` (what chat and responses share: their inputs and the fake answer).
"""

from __future__ import annotations

from .media import MAX_IMAGE_BYTES, fake_png, image_digest
from .protocol import FormFile, RecordedRequest
from .server import FakeOpenAI

__all__ = [
    "MAX_IMAGE_BYTES",
    "FakeOpenAI",
    "FormFile",
    "RecordedRequest",
    "fake_png",
    "image_digest",
]
