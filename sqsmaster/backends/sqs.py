"""Amazon SQS, or any SQS-compatible server, through a boto3 client."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from ..errors import LEASE_LOST_CODES, CredentialsMissing, LeaseLost, QueueDoesNotExist, QueueError
from ..limits import check_queue_name
from .base import Message, QueueBackend, SendEntry

logger = logging.getLogger(__name__)

_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_AWS_HOST = re.compile(
    r"^(?:sqs\.|queue\.)?(?:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.)?(?:queue\.)?amazonaws\.com(?:\.cn)?$")


def endpoint_and_region(url: str) -> tuple[str | None, str | None]:
    """Where to send requests for a queue URL, and in which region.

    An AWS host (``sqs.eu-west-1.amazonaws.com``) gives its region and leaves the
    endpoint to boto3 (which honours ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_SQS``).
    Any other host (``http://127.0.0.1:5000/...``, ElasticMQ, LocalStack) is itself
    the endpoint, unless an endpoint is configured in the environment. A URL that is not an
    SQS queue URL (``mem://``, ``sqlite://``...) gives ``(None, None)``: nothing to say.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None, None
    host = parts.hostname or ""
    match = _AWS_HOST.match(host)
    if match:
        return None, match.group("region")
    if os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL"):
        return None, None
    return f"{parts.scheme}://{parts.netloc}", None


_twin_session_lock = threading.Lock()
_twin_session: Any = None


def _after_fork_in_child() -> None:
    global _twin_session_lock
    _twin_session_lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _twins_session() -> Any:
    """One boto3 session for every twin client of this process: a client made from a session that has
    loaded SQS's model already takes ~30 ms, from a new session ~0.5 s (more on a loaded machine)."""
    global _twin_session
    import boto3

    if _twin_session is None:
        _twin_session = boto3.session.Session()
    return _twin_session


def make_client(url: str, *, read_timeout: float = 60, max_pool_connections: int = 64, max_attempts: int = 4,
                connect_timeout: float = 5, twin: bool = False) -> Any:
    """A boto3 SQS client for ``url``, with timeouts fit for long polls.

    For a non-AWS endpoint with no credentials configured, dummy credentials are
    used: local SQS-compatible servers check none. ``max_attempts`` is the total
    number of attempts per call (1 = no retry, for callers with a backoff of their
    own); the default 4 is what botocore's ``max_attempts: 3`` (retries) meant. The
    pool holds as many connections as ``submit_many`` may have requests in flight
    (connections open only when used): past the pool, urllib3 opens and drops a new
    connection for every request. botocore's own check of every parameter against
    the service model is off: sqsmaster builds each request itself from values it
    checked against SQS's limits (:mod:`sqsmaster.limits`), SQS checks them again,
    and the walk over the model cost about a tenth of the client's CPU per request.
    ``twin``: made from the session shared by twin clients (see :func:`twin_client`).
    """
    if twin:
        with _twin_session_lock:  # a boto3 session is not thread-safe
            return _make_client(_twins_session(), url, read_timeout, max_pool_connections, max_attempts,
                                connect_timeout)
    import boto3

    return _make_client(boto3.session.Session(), url, read_timeout, max_pool_connections, max_attempts,
                        connect_timeout)


def _make_client(session: Any, url: str, read_timeout: float, max_pool_connections: int, max_attempts: int,
                 connect_timeout: float) -> Any:
    from botocore.config import Config

    endpoint, region = endpoint_and_region(url)
    region = region or session.region_name or "us-east-1"
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        parameter_validation=False,
    )
    kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint is not None:
        kwargs["endpoint_url"] = endpoint
        if session.get_credentials() is None:
            kwargs.update(aws_access_key_id="sqsmaster", aws_secret_access_key="sqsmaster")
    return session.client("sqs", **kwargs)


def bounded_config(timeout: float) -> Any:
    """Client settings under which one call waits at most ``timeout`` seconds for an answer (the read
    timeout) and half that to connect, with no hidden retries (the caller decides when to try again)."""
    from botocore.config import Config

    return Config(connect_timeout=timeout / 2, read_timeout=timeout,
                  retries={"mode": "standard", "total_max_attempts": 1})


def twin_client(client: Any, timeout: float | None = None) -> Any:
    """A new client with the same endpoint, region, config and credentials as ``client``;
    with ``timeout``, every call of it is bounded (see :func:`bounded_config`)."""
    config = client.meta.config if timeout is None else client.meta.config.merge(bounded_config(timeout))
    kwargs: dict[str, Any] = {"endpoint_url": client.meta.endpoint_url, "region_name": client.meta.region_name,
                              "config": config}
    signer = getattr(client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        kwargs.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
                      aws_session_token=frozen.token)
    with _twin_session_lock:
        return _twins_session().client("sqs", **kwargs)


#: Told ``(operation, code)`` of each SQS call of this process that failed (a worker's metrics count them);
#: ``code`` is SQS's error code, or the exception's type when no answer came. See :func:`on_call_error`.
_error_hooks: list[Callable[[str, str], None]] = []


def on_call_error(hook: Callable[[str, str], None]) -> Callable[[], None]:
    """Call ``hook(operation, code)`` after each failed SQS call of this process, on the calling thread
    (a heartbeat's included), so it must return at once; what it raises is logged and dropped.
    Returns the function that removes the hook."""
    _error_hooks.append(hook)

    def remove() -> None:
        if hook in _error_hooks:
            _error_hooks.remove(hook)
    return remove


def _call_failed(operation: str, exc: Exception) -> None:
    _tell_hooks(operation, _error_code(exc))


def _tell_hooks(operation: str, code: str) -> None:
    for hook in list(_error_hooks):
        try:
            hook(operation, code)
        except Exception:
            logger.exception("an SQS error hook failed")


def _entries_failed(operation: str, failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch call's failed entries (each an error of its own, in a call that succeeded), told to the hooks."""
    for entry in failed if _error_hooks else ():
        _tell_hooks(operation, str(entry.get("Code", "unknown")))
    return failed


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


#: SQS's answer when a queue was purged less than 60 seconds ago.
PURGE_IN_PROGRESS_CODES = frozenset({"AWS.SimpleQueueService.PurgeQueueInProgress", "PurgeQueueInProgress"})


def _queue_error(exc: Any, url: str, operation: str, message_id: str | None) -> QueueError:
    """The sqsmaster error for a ClientError SQS answered with, keeping its code and response."""
    code, response = _error_code(exc), getattr(exc, "response", None)
    if code in _MISSING_QUEUE_CODES:
        return QueueDoesNotExist(f"queue {url} does not exist ({code})", code=code, response=response,
                                 operation=operation)
    if code in LEASE_LOST_CODES and operation in ("change_message_visibility", "delete_message"):
        return LeaseLost(message_id, code, str(exc), response=response, operation=operation)
    if code in PURGE_IN_PROGRESS_CODES:
        return QueueError(f"{url} was purged less than 60 s ago ({code}): SQS allows one purge per queue every 60 "
                          "seconds, and that purge is still deleting its messages; try again in a minute",
                          code=code, response=response, operation=operation)
    return QueueError(f"{operation} on {url} failed: {exc}", code=code, response=response, operation=operation)


class SqsQueue(QueueBackend):
    """A queue on SQS or an SQS-compatible server, addressed by its queue URL."""

    def __init__(self, url: str, client: Any = None) -> None:
        self.url = url
        self.client = client if client is not None else make_client(url)
        self._owns_client = client is None
        self._twins: dict[float | None, SqsQueue] = {}
        self._twin_lock = threading.Lock()

    @property
    def fifo(self) -> bool:  # type: ignore[override]
        """A FIFO queue: SQS names end in ``.fifo``."""
        return self.url.rstrip("/").endswith(".fifo")

    @property
    def max_connections(self) -> int:
        """Connections the client's pool keeps: more requests at once would each open a new one."""
        return int(self.client.meta.config.max_pool_connections)

    def _call(self, operation: str, message_id: str | None = None, **params: Any) -> Any:
        """Call the client on this queue; botocore's errors come back as sqsmaster's (each a ClientError too,
        see :class:`~sqsmaster.errors.QueueError`), the original as ``__cause__``."""
        return self._client_call(operation, message_id, QueueUrl=self.url, **params)

    def _client_call(self, operation: str, message_id: str | None = None, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            _call_failed(operation, exc)
            raise _queue_error(exc, self.url, operation, message_id) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            _call_failed(operation, exc)
            # A configuration problem, not an unreachable queue: a worker must not wait for it to pass.
            raise CredentialsMissing(
                f"no AWS credentials for {self.url} ({exc}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE, or run where a role provides them") from exc
        except BotoCoreError as exc:  # no answer: connection refused, a timeout...
            _call_failed(operation, exc)
            raise QueueError(f"{operation} on {self.url} failed: {exc}", operation=operation) from exc

    def send(self, entry: SendEntry) -> dict[str, Any]:
        return self._call("send_message", **_send_params(entry, batch=False))

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        response = self._call("send_message_batch",
                              Entries=[_send_params(entry, batch=True) for entry in entries])
        return {"Successful": response.get("Successful", []),
                "Failed": _entries_failed("send_message_batch", list(response.get("Failed", [])))}

    def receive(self, max_messages: int = 1, wait_time: int = 0,
                visibility_timeout: int | None = None) -> list[Message]:
        params: dict[str, Any] = {
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_time,
            # Both names: older SQS-compatible servers know only the deprecated AttributeNames.
            "AttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            params["VisibilityTimeout"] = visibility_timeout
        response = self._call("receive_message", **params)
        now = time.monotonic()
        return [
            Message(self, raw["MessageId"], raw["ReceiptHandle"], raw["Body"], raw.get("Attributes"),
                    raw.get("MessageAttributes"), visibility_timeout, now)
            for raw in response.get("Messages", [])
        ]

    def change_visibility(self, receipt_handle: str, visibility_timeout: int,
                          message_id: str | None = None) -> None:
        self._call("change_message_visibility", message_id,
                   ReceiptHandle=receipt_handle, VisibilityTimeout=int(visibility_timeout))

    def change_visibility_batch(self, entries: Any) -> list[dict[str, Any]]:
        batch = [{"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": int(timeout)}
                 for i, (handle, timeout) in enumerate(entries)]
        if not batch:
            return []
        return _entries_failed("change_message_visibility_batch",
                               list(self._call("change_message_visibility_batch", Entries=batch).get("Failed", [])))

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        self._call("delete_message", message_id, ReceiptHandle=receipt_handle)

    def delete_batch(self, receipt_handles: list[str]) -> list[dict[str, Any]]:
        if not receipt_handles:
            return []
        batch = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipt_handles)]
        return _entries_failed("delete_message_batch",
                               list(self._call("delete_message_batch", Entries=batch).get("Failed", [])))

    def get_attributes(self) -> dict[str, str]:
        return dict(self._call("get_queue_attributes", AttributeNames=["All"]).get("Attributes", {}))

    def purge(self) -> None:
        self._call("purge_queue")

    def polling_twin(self, read_timeout: float) -> "SqsQueue":
        return SqsQueue(self.url, make_client(self.url, read_timeout=read_timeout, max_attempts=1, twin=True))

    def create(self, visibility_timeout: int | None = None, max_receive_count: int | None = None) -> str:
        """CreateQueue for the name in this URL, on its endpoint; idempotent, as SQS's is. Returns the URL SQS gives.

        A ``.fifo`` name makes a FIFO queue. With ``max_receive_count``, also a dead-letter queue
        ``NAME-dlq`` (``NAME-dlq.fifo``) and a redrive policy that moves a message there after that
        many receives. Raises ConfigurationError for a name SQS would refuse (checked before anything is
        sent), QueueError (an existing queue with other attributes: ``QueueAlreadyExists``).
        """
        name = self.url.rstrip("/").rsplit("/", 1)[-1]
        fifo = name.endswith(".fifo")
        check_queue_name(name)
        attributes: dict[str, str] = {"FifoQueue": "true"} if fifo else {}
        if visibility_timeout is not None:
            attributes["VisibilityTimeout"] = str(int(visibility_timeout))
        if max_receive_count:
            dead_letter_name = f"{name[:-5]}-dlq.fifo" if fifo else f"{name}-dlq"
            check_queue_name(dead_letter_name)  # before either queue is made: none or both
            dead_letter = self._client_call("create_queue", QueueName=dead_letter_name,
                                            Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
            arn = self._client_call("get_queue_attributes", QueueUrl=dead_letter,
                                    AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count})
        return str(self._client_call("create_queue", QueueName=name, Attributes=attributes)["QueueUrl"])

    def heartbeat_queue(self, timeout: float | None = None) -> "SqsQueue":
        """A twin with a client of its own (never the task's, whose connection pool lock the task may
        hold); with ``timeout``, each call is bounded by it and never retried (one twin per timeout)."""
        with self._twin_lock:
            return self._twins.get(timeout) or self._make_twin(timeout)

    def _make_twin(self, timeout: float | None) -> "SqsQueue":
        if timeout is None:
            client = (make_client(self.url, read_timeout=10, twin=True) if self._owns_client
                      else twin_client(self.client))
        elif self._owns_client:
            client = make_client(self.url, connect_timeout=timeout / 2, read_timeout=timeout, max_attempts=1,
                                 twin=True)
        else:
            client = twin_client(self.client, timeout)
        twin = self._twins[timeout] = SqsQueue(self.url, client)
        twin._owns_client = True
        return twin

    def close(self) -> None:
        for twin in list(self._twins.values()):
            twin.close()
        if self._owns_client:
            self.client.close()


def _send_params(entry: SendEntry, *, batch: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"MessageBody": entry.body}
    if batch:
        params["Id"] = entry.id
    if entry.message_attributes:
        params["MessageAttributes"] = entry.message_attributes
    if entry.delay_seconds:
        params["DelaySeconds"] = entry.delay_seconds
    if entry.group_id is not None:
        params["MessageGroupId"] = entry.group_id
    if entry.deduplication_id is not None:
        params["MessageDeduplicationId"] = entry.deduplication_id
    return params
