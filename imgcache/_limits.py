"""The bounds of the data imgcache keys and stores: request parameters and results.

A request whose prompt or parameters break one is refused with
:class:`~imgcache.errors.InvalidRequest` before anything is looked up or sent upstream; a
result that breaks one is returned to its caller uncached
(:class:`~imgcache.errors.UnstorableResult`, announced with an ``UncachedResultWarning``).
Each check raises the error class its caller names.

* :data:`MAX_DEPTH`: lists and dicts nested at most 64 levels deep, the outermost (the
  parameters' own mapping, or the result) counted. Real payloads stay under 15 (a chat
  conversation with image parts is 6; OpenAI's structured-output schemas allow 10 levels of
  objects, about 25 here), and 64 keeps every walker of the data (keying, encoding, JSON
  dumping and parsing, sizing) far below Python's recursion limit whatever the caller's own
  stack depth. It also refuses self-containing (cyclic) data.
* :data:`MAX_INT_DIGITS`: integers under ``10**100`` in magnitude. Any real parameter (a
  seed, a count, a token budget) is far smaller, and 100 digits stays clear of Python's
  int-to-str digit limit in every process, which ``sys.set_int_max_str_digits`` can lower to
  640: a key or an entry written by one process must parse in all the others.
* Strings must be valid Unicode. A lone surrogate (``"\\ud800"``, what a mis-decoded
  ``surrogateescape`` or a split UTF-16 pair leaves) has no UTF-8 form: it cannot be hashed
  into a key, stored, or sent in a JSON body that the API accepts. It is refused, never
  replaced: replacing would give two different prompts the same key.
"""

from __future__ import annotations

import math
from typing import Final

MAX_DEPTH: Final = 64
MAX_INT_DIGITS: Final = 100
MAX_INT: Final = 10**MAX_INT_DIGITS
"""Integers must satisfy ``-MAX_INT < n < MAX_INT``."""

_LOG10_2: Final = math.log10(2)


def check_depth(depth: int, path: str, error: type[Exception]) -> None:
    """Raise ``error`` when a list or dict sits ``depth`` levels deep, beyond :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise error(f"{path}: lists and dicts nested deeper than {MAX_DEPTH} levels (or a cycle)")


def check_int(value: int, path: str, error: type[Exception]) -> None:
    """Raise ``error`` for an integer of :data:`MAX_INT_DIGITS` digits or more."""
    if not -MAX_INT < value < MAX_INT:
        digits = int(value.bit_length() * _LOG10_2) + 1  # str(value) itself may be refused
        raise error(f"{path}: an integer of about {digits} digits; integers must be under"
                    f" 10**{MAX_INT_DIGITS} in magnitude")


def check_text(value: str, path: str, error: type[Exception]) -> None:
    """Raise ``error`` for a string that is not valid Unicode (a lone surrogate). ASCII
    strings cost nothing: ``str.isascii`` reads a flag."""
    if value.isascii():
        return
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise error(f"{path}: not valid Unicode: a lone surrogate {value[exc.start]!r} at index"
                    f" {exc.start}") from None
