"""What a prewarm run reads: prompts with their parameters, each with where it came from.

Sources: a text file (one prompt a line), JSONL (one object a line: ``prompt`` plus
parameters), CSV (a header with a ``prompt`` column; the image-parameter columns ``model``,
``size``, ``quality``, ... are used, others ignored), standard input (``-``), or, from Python,
any iterable of prompts, dicts or :class:`PrewarmItem`.

A line that cannot be used becomes an :class:`InputProblem` with its line number and the
reading goes on: one bad line never costs the rest of the run. Only a source that cannot be
read at all (a missing file, a CSV without a ``prompt`` column) raises
:class:`~imgcache.errors.ConfigError`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError

FORMATS = ("auto", "text", "jsonl", "csv")
CSV_PARAMS = frozenset({"model", "size", "quality", "style", "n", "background", "output_format",
                        "output_compression", "moderation"})
"""CSV columns taken as image parameters; any other column (a SKU, a category) is ignored."""
_INT_PARAMS = frozenset({"n", "output_compression"})
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "text"}


@dataclass(frozen=True)
class PrewarmItem:
    """One prompt to warm: the prompt as it will be sent, and its ``images.generate``
    parameters other than the prompt (``model``, ``size``, ``quality``, ...)."""

    prompt: str
    params: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None
    """1-based line (or record) number in its source; None when built in code."""
    source: str = ""
    """A file name, ``<stdin>``, ``history`` or ``""``; for messages."""

    @property
    def where(self) -> str:
        return _where(self.source, self.line)


@dataclass(frozen=True)
class InputProblem:
    """A line that was skipped, and why."""

    line: int | None
    message: str
    source: str = ""
    blank: bool = False
    """An empty line: reported, but not a reason to call the run incomplete."""

    def __str__(self) -> str:
        where = _where(self.source, self.line)
        return f"{where}: {self.message}" if where else self.message


def _where(source: str, line: int | None) -> str:
    if line is None:
        return source
    return f"{source}:{line}" if source else f"line {line}"


def read_items(
    source: str | os.PathLike[str] | TextIO | Iterable[Any],
    *,
    format: str = "auto",
    params: Mapping[str, Any] | None = None,
) -> Iterator[PrewarmItem | InputProblem]:
    """Items and problems of ``source``, in order. ``params`` are defaults that a line's own
    parameters (JSONL fields, CSV columns) override. ``format`` is ``auto`` (by the file's
    suffix, else JSONL if the first non-empty line starts with ``{``, else text), ``text``,
    ``jsonl`` or ``csv``. Raises ConfigError if the source cannot be read at all."""
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    defaults = dict(params or {})
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name == "-":
            lines, label = _decoded(sys.stdin.buffer), "<stdin>"
        else:
            path = Path(name)
            try:
                handle = path.open("rb")
            except OSError as exc:
                raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from exc
            lines, label = _decoded(handle, close=True), path.name
            if format == "auto":
                format = _SUFFIXES.get(path.suffix.lower(), "auto")
        yield from _parse(lines, format, defaults, label)
    elif isinstance(source, io.TextIOBase) or hasattr(source, "readline"):
        numbered = ((number, line, None) for number, line in enumerate(source, 1))  # type: ignore[arg-type]
        yield from _parse(numbered, format, defaults, getattr(source, "name", "") or "")
    else:
        yield from _objects(source, defaults)


Line = tuple[int, str, str | None]
"""(line number, text without its line break, decoding error or None)."""


def _decoded(handle: Any, *, close: bool = False) -> Iterator[Line]:
    """Lines of a binary stream decoded one by one: a line that is not UTF-8 is a problem of
    that line only (a byte-order mark on the first line is dropped)."""
    try:
        for number, raw in enumerate(handle, 1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield number, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                yield number, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    finally:
        if close:
            handle.close()


def _parse(lines: Iterable[Line], format: str, defaults: dict[str, Any], label: str
           ) -> Iterator[PrewarmItem | InputProblem]:
    lines = iter(lines)
    if format == "auto":
        format, lines = _sniff(lines)
    if format == "csv":
        yield from _csv(lines, defaults, label)
        return
    for number, text, error in lines:
        text = text.rstrip("\r\n")
        if error is not None:
            yield InputProblem(number, error, label)
        elif not text.strip():
            yield InputProblem(number, "empty line", label, blank=True)
        elif format == "jsonl":
            yield _json_line(number, text, defaults, label)
        else:
            yield PrewarmItem(text.strip(), defaults, number, label)


def _sniff(lines: Iterator[Line]) -> tuple[str, Iterator[Line]]:
    """JSONL if the first non-empty line starts with ``{``, else text (CSV is never guessed:
    a prompt may well hold commas)."""
    seen: list[Line] = []
    format = "text"
    for line in lines:
        seen.append(line)
        if line[1].strip():
            format = "jsonl" if line[1].lstrip().startswith("{") else "text"
            break
    return format, _chain(seen, lines)


def _chain(first: list[Line], rest: Iterator[Line]) -> Iterator[Line]:
    yield from first
    yield from rest


def _json_line(number: int, text: str, defaults: dict[str, Any], label: str) -> PrewarmItem | InputProblem:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return InputProblem(number, f"not a JSON object: {exc}", label)
    if not isinstance(data, dict):
        return InputProblem(number, f"not a JSON object but a {type(data).__name__}", label)
    return _from_mapping(data, defaults, number, label)


def _from_mapping(data: Mapping[str, Any], defaults: dict[str, Any], number: int | None, label: str
                  ) -> PrewarmItem | InputProblem:
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        return InputProblem(number, "no \"prompt\" string" if prompt is None
                            else f"\"prompt\" is a {type(prompt).__name__}, not a string", label)
    if not prompt.strip():
        return InputProblem(number, "empty prompt", label)
    params = {**defaults, **{k: v for k, v in data.items() if k != "prompt"}}
    return PrewarmItem(prompt.strip(), params, number, label)


def _csv(lines: Iterator[Line], defaults: dict[str, Any], label: str) -> Iterator[PrewarmItem | InputProblem]:
    numbers: list[int] = []  # physical line number of each line handed to the csv reader
    problems: list[InputProblem] = []

    def feed() -> Iterator[str]:
        for number, text, error in lines:
            if error is not None:
                problems.append(InputProblem(number, error, label))
                continue
            numbers.append(number)
            yield text if text.endswith("\n") else text + "\n"

    reader = csv.reader(feed())
    try:
        header = next(reader)
    except StopIteration:
        yield from problems
        return
    except csv.Error as exc:
        raise ConfigError(f"{label}: the CSV header does not parse: {exc}") from exc
    columns = [name.strip().lower() for name in header]
    if "prompt" not in columns:
        raise ConfigError(f"{label}: the CSV header has no 'prompt' column (columns: {', '.join(header)})")
    prompt_at = columns.index("prompt")
    used = {i: name for i, name in enumerate(columns) if name in CSV_PARAMS}
    ignored = [header[i] for i, name in enumerate(columns) if name not in CSV_PARAMS and i != prompt_at]
    if ignored:
        yield InputProblem(numbers[0], f"columns ignored (not image parameters): {', '.join(ignored)}",
                           label, blank=True)
    consumed = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield from _drain(problems)
            yield InputProblem(numbers[min(consumed, len(numbers) - 1)], f"CSV row does not parse: {exc}", label)
            consumed = reader.line_num
            continue
        start = numbers[consumed] if consumed < len(numbers) else numbers[-1]
        consumed = reader.line_num
        yield from _drain(problems)
        if not any(cell.strip() for cell in row):
            yield InputProblem(start, "empty line", label, blank=True)
            continue
        if len(row) <= prompt_at or not row[prompt_at].strip():
            yield InputProblem(start, "empty prompt", label)
            continue
        params = dict(defaults)
        bad = None
        for i, name in used.items():
            value = row[i].strip() if i < len(row) else ""
            if not value:
                continue
            if name in _INT_PARAMS:
                try:
                    params[name] = int(value)
                except ValueError:
                    bad = f"column {name!r}: {value!r} is not a whole number"
                    break
            else:
                params[name] = value
        if bad is not None:
            yield InputProblem(start, bad, label)
            continue
        yield PrewarmItem(row[prompt_at].strip(), params, start, label)
    yield from _drain(problems)


def _drain(problems: list[InputProblem]) -> Iterator[InputProblem]:
    while problems:
        yield problems.pop(0)


def _objects(items: Iterable[Any], defaults: dict[str, Any]) -> Iterator[PrewarmItem | InputProblem]:
    """Items given in code: prompts (str), mappings like JSONL lines, PrewarmItems (and the
    InputProblems of an earlier read_items, passed on)."""
    for number, item in enumerate(items, 1):
        if isinstance(item, InputProblem):
            yield item
        elif isinstance(item, PrewarmItem):
            yield item if not defaults else PrewarmItem(item.prompt, {**defaults, **item.params},
                                                        item.line, item.source)
        elif isinstance(item, str):
            yield (PrewarmItem(item.strip(), defaults, number) if item.strip()
                   else InputProblem(number, "empty prompt", blank=True))
        elif isinstance(item, Mapping):
            yield _from_mapping(item, defaults, number, "")
        else:
            yield InputProblem(number, f"not a prompt: a {type(item).__name__}")
