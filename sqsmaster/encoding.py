"""The wire format, shared with sqstaskmaster so both interoperate on one queue.

A body is ``json.dumps({"task": name, "kwargs": kwargs})``. Values JSON cannot
hold are encoded to documented forms, and nothing else is guessed:

=====================  ==========================================
Python value           JSON form (what the task receives)
=====================  ==========================================
``datetime.datetime``  ISO 8601 string, ``dt.isoformat()``
``datetime.date``      ``"YYYY-MM-DD"``
``datetime.time``      ISO 8601 string, ``t.isoformat()``
``decimal.Decimal``    its exact string, ``str(d)``
``uuid.UUID``          canonical hyphenated string, ``str(u)``
tuple, set, frozenset  list (sets sorted when their items allow)
=====================  ==========================================
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import uuid
from typing import Any

from .errors import ConfigurationError, EncodeError, MalformedMessage


class _Unencodable(Exception):
    def __init__(self, value: object) -> None:
        self.value = value


def _default(value: object) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)  # type: ignore[type-var]
        except TypeError:
            return list(value)
    raise _Unencodable(value)


def encode_task(task: str, kwargs: dict[str, Any]) -> str:
    """Encode a task call to a message body.

    Raises :class:`EncodeError` naming the first keyword argument that cannot be encoded.
    """
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"task name must be a non-empty string, not {task!r}")
    try:
        return json.dumps({"task": task, "kwargs": kwargs}, default=_default)
    except (_Unencodable, TypeError, ValueError):  # also non-str keys, cycles
        key = _find_unencodable_key(kwargs)
        raise EncodeError(key, kwargs.get(key, kwargs)) from None


def _find_unencodable_key(kwargs: dict[str, Any]) -> str:
    for key, value in kwargs.items():
        try:
            json.dumps(value, default=_default)
        except (_Unencodable, TypeError, ValueError):
            return str(key)
    return "?"


#: Deepest nesting of arrays and objects a body may have. json's decoder recurses once per level, so a
#: hostile body of 100,000 nested arrays (200 KB, well inside SQS's limit) would raise RecursionError in the
#: worker; task kwargs never need more than a few levels, and this bound is far below the recursion limit.
MAX_NESTING_DEPTH = 100
#: Longest body the decoder reads (characters). SQS bodies are at most 1 MiB, but an S3 payload can be
#: much larger, and decoding builds Python objects several times the text's size in the worker's own
#: memory: one message must not be able to exhaust it. Larger data belongs in a reference (an S3 key).
MAX_DECODED_BODY = 64 * 1024 * 1024

# A JSON string, escapes included: what the nesting check drops before it counts brackets.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# Every byte but the four brackets (UTF-8 never uses these four bytes inside another character).
_NOT_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
# Innermost pairs, once only brackets are left: each removal of them peels one level.
_INNERMOST = re.compile(rb"\[\]|\{\}")
# A \uXXXX escape of a UTF-16 surrogate: the only way a JSON text can carry one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# An exponent of three digits or more: the only way a JSON number can overflow a float to inf.
_HUGE_EXPONENT = re.compile(r"[eE]\+?\d{3}")


def _outside_strings(text: str) -> str:
    if '\\"' not in text:  # no escaped quote: every other piece between quotes is inside a string
        return "".join(text.split('"')[0::2])
    return _STRING.sub("", text)


def nests_deeper_than(text: str, limit: int = MAX_NESTING_DEPTH) -> bool:
    """True when arrays and objects in the JSON ``text`` nest more than ``limit`` levels deep.

    Brackets inside strings do not count. String and byte operations only, never recursion, so
    it is safe on any input: strings and everything but brackets are dropped, a run of more than
    ``limit`` opening brackets answers at once, else each pass peels the innermost pairs (a
    task's kwargs need a few passes). Brackets that do not pair up are left to the decoder.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # it cannot nest deeper than it has opening brackets
    brackets = _outside_strings(text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKET)
    if re.search(rb"[\[{]{%d}" % (limit + 1), brackets):
        return True
    for _ in range(limit):
        peeled = _INNERMOST.sub(b"", brackets)
        if not peeled or peeled == brackets:
            return False  # all gone within the limit, or unbalanced (not JSON: the decoder says so)
        brackets = peeled
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_FINITE_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def decode_json(body: Any, message_id: str | None = None) -> Any:
    """Parse a message body as strict JSON, bounded; raises :class:`MalformedMessage` for anything else.

    Refused: a body that is not text, longer than :data:`MAX_DECODED_BODY`, nested deeper than
    :data:`MAX_NESTING_DEPTH`, not JSON (``NaN``/``Infinity`` and numbers out of range included),
    or holding a lone surrogate (``"\\ud800"``: not Unicode text, so no task could write it out).
    Any error of the parser itself (``RecursionError``, ``MemoryError``...) is a malformed message
    too: whatever a message carries, the worker reading it never fails.
    """
    if not isinstance(body, str):
        raise MalformedMessage(message_id, f"body is not text but {type(body).__name__}")
    if len(body) > MAX_DECODED_BODY:
        raise MalformedMessage(message_id, f"body of {len(body):,} characters is over the decoder's limit of "
                                           f"{MAX_DECODED_BODY:,} (MAX_DECODED_BODY); pass large data by reference")
    if nests_deeper_than(body):
        raise MalformedMessage(message_id, f"body nests arrays/objects deeper than {MAX_NESTING_DEPTH} levels "
                                           "(MAX_NESTING_DEPTH)")
    # The float-checking decoder calls back for every float: only for a body that may hold one too big.
    decoder = _FINITE_DECODER if _HUGE_EXPONENT.search(body) else _DECODER
    try:
        content = decoder.decode(body)
    except Exception as exc:  # JSONDecodeError, ValueError (too many digits), RecursionError, MemoryError...
        raise MalformedMessage(message_id, f"body is not JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(content, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedMessage(message_id, "body holds a lone surrogate (a \\uD800-\\uDFFF escape without "
                                               "its pair): not Unicode text") from None
    return content


def decode_task(body: Any, message_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """Decode a message body to ``(task, kwargs)``.

    Raises :class:`MalformedMessage` for a body :func:`decode_json` refuses, a body that is not
    an object, a missing or non-string ``task`` or a ``kwargs`` that is not an object.
    """
    content = decode_json(body, message_id)
    if not isinstance(content, dict):
        raise MalformedMessage(message_id, f"body is not a JSON object but {_kind(content)}")
    if "task" not in content:
        raise MalformedMessage(message_id, "body has no 'task' key")
    if "kwargs" not in content:
        raise MalformedMessage(message_id, "body has no 'kwargs' key")
    task, kwargs = content["task"], content["kwargs"]
    if not isinstance(task, str):
        raise MalformedMessage(message_id, f"'task' is not a string but {_kind(task)}")
    if not isinstance(kwargs, dict):
        raise MalformedMessage(message_id, f"'kwargs' is not an object but {_kind(kwargs)}")
    return task, kwargs


def _kind(value: Any) -> str:
    """A short description of a decoded value for an error line (never the whole value: it may be huge)."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
