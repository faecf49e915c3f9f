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


def decode_task(body: str, message_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """Decode a message body to ``(task, kwargs)``.

    Raises :class:`MalformedMessage` for bad JSON, a body that is not an object,
    a missing or non-string ``task`` or a ``kwargs`` that is not an object.
    """
    try:
        content = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedMessage(message_id, f"body is not JSON ({exc})") from None
    if not isinstance(content, dict):
        raise MalformedMessage(message_id, "body is not a JSON object")
    if "task" not in content:
        raise MalformedMessage(message_id, "body has no 'task' key")
    if "kwargs" not in content:
        raise MalformedMessage(message_id, "body has no 'kwargs' key")
    task, kwargs = content["task"], content["kwargs"]
    if not isinstance(task, str):
        raise MalformedMessage(message_id, f"'task' is not a string: {task!r}")
    if not isinstance(kwargs, dict):
        raise MalformedMessage(message_id, f"'kwargs' is not an object: {kwargs!r}")
    return task, kwargs
