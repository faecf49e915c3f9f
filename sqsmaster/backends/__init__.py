"""Queue backends, picked by URL scheme: ``http(s)://`` SQS, ``mem://`` LocalQueue,
``sqlite:///PATH?queue=NAME`` and ``fq:///DIR`` (durable local queues)."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Message, QueueBackend, SendEntry
from .memory import LocalQueue

__all__ = ["Message", "QueueBackend", "SendEntry", "LocalQueue", "open_queue", "register_scheme"]

_SCHEMES: dict[str, Callable[..., QueueBackend]] = {}


def register_scheme(scheme: str, factory: Callable[..., QueueBackend]) -> None:
    """Make ``open_queue`` build ``factory(url, client=..., create=...)`` for URLs of ``scheme``."""
    _SCHEMES[scheme] = factory


def _sqs(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    from .sqs import SqsQueue

    return SqsQueue(url, client=client)


def _memory(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    return LocalQueue(url)


register_scheme("http", _sqs)
register_scheme("https", _sqs)
register_scheme("mem", _memory)


def _sqlite(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    from .sqlite import SqliteQueue

    return SqliteQueue(url, create=create)


def _file_queue(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    from .fq import FileQueue

    return FileQueue(url, create=create)


register_scheme("sqlite", _sqlite)
register_scheme("fq", _file_queue)


def open_queue(url: str, *, client: Any = None, queue_constructor: Callable[[str], Any] | None = None,
               create: bool = True) -> QueueBackend:
    """The backend for ``url``; ``queue_constructor(url)`` wins when given.

    ``create``: the first send creates a ``sqlite://`` or ``fq://`` queue that does not exist
    (True, a producer's first use); False makes it raise QueueDoesNotExist like every other
    call on a missing queue (receives, attributes, purge never create one). SQS queues are
    created with your AWS tooling (or ``sqsmaster create``); ``mem://`` queues always exist.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"queue URL must be a non-empty string, not {url!r}")
    if queue_constructor is not None:
        if not callable(queue_constructor):
            raise ConfigurationError(f"queue_constructor must be callable (url -> queue), not {queue_constructor!r}")
        return queue_constructor(url)
    return _factory(url)(url, client=client, create=create)


def _factory(url: str) -> Callable[..., QueueBackend]:
    scheme = urlsplit(url).scheme
    factory = _SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigurationError(f"queue URL {url!r} has an unknown scheme {scheme + '://' if scheme else '(none)'}; "
                                 f"use one of {known}")
    return factory


def check_url(url: str) -> None:
    """Raise ConfigurationError when :func:`open_queue` would refuse ``url`` itself (not a string, an
    unknown scheme, a ``sqlite://`` URL that names no queue, an unknown option); opens nothing, so a
    worker refuses a bad URL before it starts rather than after."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"queue URL must be a non-empty string, not {url!r}")
    _factory(url)
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import parse_sqlite_url

        parse_sqlite_url(url)
    elif scheme == "fq":
        from .fq import parse_fq_url

        parse_fq_url(url)
