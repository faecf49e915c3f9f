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

# A JSON string (escapes included) or one bracket: what the nesting scan steps over.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# A \uXXXX escape of a UTF-16 surrogate: the only way a JSON text can carry one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def nests_deeper_than(text: str, limit: int = MAX_NESTING_DEPTH) -> bool:
    """True when arrays and objects in the JSON ``text`` nest more than ``limit`` levels deep.

    Brackets inside strings do not count. Linear in the text and never recursive, so it is
    safe on any input (malformed JSON included; the decoder refuses that anyway).
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # it cannot nest deeper than it has opening brackets
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > limit:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


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
    try:
        content = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
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
