"""Queue backends, picked by URL scheme: ``http(s)://`` SQS, ``mem://`` LocalQueue,
``sqlite:///PATH?queue=NAME`` and ``fq:///DIR`` (durable local queues)."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Message, QueueBackend, SendEntry
from .memory import LocalQueue

__all__ = ["Message", "QueueBackend", "SendEntry", "LocalQueue", "open_queue", "register_scheme",
           "is_process_local", "open_bounded_queue"]

_SCHEMES: dict[str, Callable[..., QueueBackend]] = {}
_PROCESS_LOCAL: set[str] = set()


def register_scheme(scheme: str, factory: Callable[..., QueueBackend], *, process_local: bool = False) -> None:
    """Make ``open_queue`` build ``factory(url, client=..., create=...)`` for URLs of ``scheme``.

    ``process_local``: queues of this scheme live inside one process (their ``process_local``
    capability), so :func:`is_process_local` can tell before any queue is opened.
    """
    _SCHEMES[scheme] = factory
    if process_local:
        _PROCESS_LOCAL.add(scheme)
    else:
        _PROCESS_LOCAL.discard(scheme)


def is_process_local(url: str) -> bool:
    """True if a queue at ``url`` lives inside the process that opens it (``mem://``): another process
    (a worker, a parallel submitter) opening the same URL would see another, empty queue."""
    return urlsplit(url).scheme in _PROCESS_LOCAL


def _no_client(url: str, client: Any) -> None:
    if client is not None:
        raise ConfigurationError(f"client= is a boto3 SQS client, and the queue {url!r} does not use one "
                                 "(only http(s):// SQS queue URLs do)")


def _sqs(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    from .sqs import SqsQueue

    return SqsQueue(url, client=client)


def _memory(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    _no_client(url, client)
    return LocalQueue(url)


register_scheme("http", _sqs)
register_scheme("https", _sqs)
register_scheme("mem", _memory, process_local=True)


def _sqlite(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    _no_client(url, client)
    from .sqlite import SqliteQueue

    return SqliteQueue(url, create=create)


def _file_queue(url: str, client: Any = None, create: bool = True) -> QueueBackend:
    _no_client(url, client)
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

    ``client`` (a boto3 SQS client) is for SQS queue URLs; given with a queue that cannot use
    it, ConfigurationError names the problem rather than ignoring the client.
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


def open_bounded_queue(url: str, call_timeout: float,
                       queue_constructor: Callable[[str], Any] | None = None) -> tuple[QueueBackend, Any]:
    """The queue at ``url`` with calls that fail within ``call_timeout`` seconds (plus the connect
    timeout), tried once, and the client made for that, which the caller closes (None: nothing to close).
    Queues with nothing to wait on, and those of ``queue_constructor``, are opened as they are."""
    if queue_constructor is None and urlsplit(url).scheme in ("http", "https"):
        from .sqs import make_client

        client = make_client(url, read_timeout=call_timeout, max_attempts=1)
        return open_queue(url, client=client), client
    return open_queue(url, queue_constructor=queue_constructor), None
