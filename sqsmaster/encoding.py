"""The wire format, shared with sqstaskmaster so both interoperate on one queue.

A body is ``json.dumps({"task": name, "kwargs": kwargs})``. sqstaskmaster encodes a
value JSON cannot hold as ``str(value)``; sqsmaster does the same where that string
is the value's own canonical text, so either library's producer can feed either
library's consumer (a consumer that parses dates with ``strptime`` keeps working
when the producer switches), and refuses the rest, naming the kwarg, where
sqstaskmaster sent something no consumer could read back:

==========================================  =================================  =====================================
Python value                                sqsmaster sends                    sqstaskmaster sent
==========================================  =================================  =====================================
str, int, float, bool, None, list, dict     itself (JSON)                      the same
tuple                                       a list                             the same
``datetime.datetime``                       ``str(dt)``: ``"2019-01-01         the same
                                            12:30:00"`` (``.123456`` when it
                                            has microseconds, ``+00:00`` when
                                            it has a time zone)
``datetime.date``                           ``"2019-01-01"``                   the same
``datetime.time``                           ``"12:30:00"`` (``str(t)``)        the same
``decimal.Decimal``                         its exact string, ``"1.10"``       the same
``uuid.UUID``                               ``"12345678-1234-..."``            the same
``pathlib`` path                            ``"images/cat.png"``               the same
float ``nan``, ``inf``, ``-inf``            refused (EncodeError)              bare ``NaN``/``Infinity``: not JSON,
                                                                               other consumers fail to parse it
a dict key that is not a str                refused                            ``1`` became ``"1"`` silently
set, frozenset                              refused (pass a sorted list)       ``"{1, 2}"``, a Python repr
bytes, enum members, any other object       refused                            ``"b'...'"``, ``"Color.RED"``,
                                                                               ``"<Foo object at 0x...>"``
a value that contains itself                refused                            ``ValueError`` from json
==========================================  =================================  =====================================

:func:`encode_task` raises :class:`~sqsmaster.errors.EncodeError` naming the kwarg and the
path to the value inside it (``stats['mean']``). The receiving side gets plain JSON: strings
stay strings, so parse dates in the task (``datetime.fromisoformat`` reads ``str(dt)``).
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import pathlib
import re
import uuid
from typing import Any, Iterator

from .errors import ConfigurationError, EncodeError, MalformedMessage

#: Types sent as ``str(value)``, sqstaskmaster's encoding, because that string is the value's canonical text.
#: (``datetime.datetime`` is a ``datetime.date``.)
STR_ENCODED = (datetime.date, datetime.time, decimal.Decimal, uuid.UUID, pathlib.PurePath)
_CONTAINERS = (dict, list, tuple)


class _Unencodable(Exception):
    def __init__(self, value: object) -> None:
        self.value = value


def _default(value: object) -> Any:
    if isinstance(value, STR_ENCODED):
        return str(value)
    raise _Unencodable(value)


def encode_task(task: str, kwargs: dict[str, Any]) -> str:
    """Encode a task call to a message body, as sqstaskmaster does (see the module's table).

    Raises :class:`EncodeError` naming the kwarg (and the path inside it) that JSON cannot hold:
    a set, a float nan or inf, a dict key that is not a str, bytes, an object with no canonical
    text, a value that contains itself. Nothing is sent then.
    """
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"task name must be a non-empty string, not {task!r}")
    if not isinstance(kwargs, dict):
        raise ConfigurationError(f"kwargs of task {task!r} must be a dict, not {type(kwargs).__name__}")
    try:
        body = json.dumps({"task": task, "kwargs": kwargs}, default=_default, allow_nan=False)
    except (_Unencodable, TypeError, ValueError, RecursionError):  # a set, nan, an object, a cycle...
        raise _explain(kwargs) from None
    # json.dumps turns int, float, bool and None dict keys into strings without a word, and a consumer refuses
    # a body nested deeper than MAX_NESTING_DEPTH. Reading the body back (in C) clears plain data at once;
    # only kwargs that differ from what a consumer reads (tuples, dates...) are walked.
    if nests_deeper_than(body) or (json.loads(body)["kwargs"] != kwargs and not _keys_are_str(kwargs)):
        raise _explain(kwargs)
    return body


def _keys_are_str(kwargs: dict[str, Any]) -> bool:
    """True when every dict inside ``kwargs`` (itself included) has only str keys and the body nests
    no deeper than the decoder reads (:data:`MAX_NESTING_DEPTH`). It visits containers only, and scans
    long ones in C (``map(type, ...)``)."""
    stack: list[tuple[Any, int]] = [(kwargs, 2)]  # the body's object is level 1, kwargs level 2
    seen = {id(kwargs)}  # a value shared many times is looked at once; a cycle stops here (json.dumps names it)
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING_DEPTH:
            return False
        if isinstance(value, dict):
            if not _all_of(value, str):
                return False
            items: Any = value.values()
        else:
            items = value
        if len(items) > _SCAN_IN_C and not any(issubclass(kind, _CONTAINERS) for kind in set(map(type, items))):
            continue
        for item in items:
            if isinstance(item, _CONTAINERS) and id(item) not in seen:
                seen.add(id(item))
                stack.append((item, depth + 1))
    return True


#: Containers longer than this are scanned for nested containers by type in C, not item by item.
_SCAN_IN_C = 32


def _all_of(keys: Any, kind: type) -> bool:
    if len(keys) > _SCAN_IN_C:
        return all(issubclass(found, kind) for found in set(map(type, keys)))
    return all(isinstance(key, kind) for key in keys)


def _explain(kwargs: dict[str, Any]) -> EncodeError:
    """The EncodeError for the first kwarg that cannot be encoded (the slow path: only after a failure)."""
    for key, value in kwargs.items():
        if not isinstance(key, str):
            return EncodeError(repr(key), key, f"is a kwarg name of type {type(key).__name__}, not a string")
        for path, reason in _problems(value, key, 3, ()):
            return EncodeError(key, value, reason, path)
    return EncodeError("?", kwargs, "cannot be encoded")


def _problems(value: Any, path: str, depth: int, ancestors: tuple[int, ...]) -> Iterator[tuple[str, str]]:
    """``(path, reason)`` of each value under ``value`` that the wire cannot carry, depth first."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, f"is the float {value}, which JSON cannot hold (sqstaskmaster sent it as bare NaN/Infinity, " \
                    "which other JSON parsers refuse)"
    elif isinstance(value, (str, int, float, type(None))) or isinstance(value, STR_ENCODED):
        return
    elif not isinstance(value, _CONTAINERS):
        yield path, ("is a set (pass a sorted list)" if isinstance(value, (set, frozenset)) else
                     f"is of type {type(value).__name__}, which JSON cannot hold; pass str, int, float, bool, None, "
                     "a list, tuple or dict (str keys) of those, a date, datetime, time, Decimal, UUID or path")
    elif id(value) in ancestors:
        yield path, "is a list/dict that contains itself (a cycle)"
    elif depth > MAX_NESTING_DEPTH:
        yield path, f"nests lists/dicts deeper than a consumer reads ({MAX_NESTING_DEPTH} levels, MAX_NESTING_DEPTH)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield path, (f"has the key {key!r} of type {type(key).__name__}; JSON keys are strings (json.dumps "
                             "would turn it into a string without a word)")
                return
            yield from _problems(item, f"{path}[{key!r}]", depth + 1, (*ancestors, id(value)))
    else:
        for index, item in enumerate(value):
            yield from _problems(item, f"{path}[{index}]", depth + 1, (*ancestors, id(value)))


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
        # Chained: a notify() written for sqstaskmaster finds the JSONDecodeError it was given as __cause__.
        raise MalformedMessage(message_id, f"body is not JSON ({type(exc).__name__}: {str(exc)[:200]})") from exc
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
    for key in ("task", "kwargs"):
        if key not in content:  # chained from the KeyError sqstaskmaster raised for it
            raise MalformedMessage(message_id, f"body has no {key!r} key") from KeyError(key)
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
