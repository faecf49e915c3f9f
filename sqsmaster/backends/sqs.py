"""Amazon SQS, or any SQS-compatible server, through a boto3 client."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import LEASE_LOST_CODES, LeaseLost, QueueDoesNotExist, QueueError
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
    the endpoint, unless an endpoint is configured in the environment.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    match = _AWS_HOST.match(host)
    if match:
        return None, match.group("region")
    if os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL"):
        return None, None
    return f"{parts.scheme}://{parts.netloc}", None


def make_client(url: str, *, read_timeout: float = 60, max_pool_connections: int = 64,
                max_attempts: int = 4) -> Any:
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
    """
    import boto3
    from botocore.config import Config

    endpoint, region = endpoint_and_region(url)
    session = boto3.session.Session()
    region = region or session.region_name or "us-east-1"
    config = Config(
        connect_timeout=5,
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


def _twin_client(client: Any) -> Any:
    """A new client with the same endpoint, region, config and credentials as ``client``."""
    import boto3

    kwargs: dict[str, Any] = {"endpoint_url": client.meta.endpoint_url, "region_name": client.meta.region_name,
                              "config": client.meta.config}
    signer = getattr(client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        kwargs.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
                      aws_session_token=frozen.token)
    return boto3.session.Session().client("sqs", **kwargs)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


class SqsQueue(QueueBackend):
    """A queue on SQS or an SQS-compatible server, addressed by its queue URL."""

    def __init__(self, url: str, client: Any = None) -> None:
        self.url = url
        self.client = client if client is not None else make_client(url)
        self._owns_client = client is None
        self._heartbeat: SqsQueue | None = None

    @property
    def max_connections(self) -> int:
        """Connections the client's pool keeps: more requests at once would each open a new one."""
        return int(self.client.meta.config.max_pool_connections)

    def _call(self, operation: str, message_id: str | None = None, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(QueueUrl=self.url, **params)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING_QUEUE_CODES:
                raise QueueDoesNotExist(f"queue {self.url} does not exist ({code})") from exc
            if code in LEASE_LOST_CODES and operation in ("change_message_visibility", "delete_message"):
                raise LeaseLost(message_id, code, str(exc)) from exc
            raise QueueError(f"{operation} on {self.url} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise QueueError(f"{operation} on {self.url} failed: {exc}") from exc

    def send(self, entry: SendEntry) -> dict[str, Any]:
        return self._call("send_message", **_send_params(entry, batch=False))

    def send_batch(self, entries: list[SendEntry]) -> dict[str, list[dict[str, Any]]]:
        response = self._call("send_message_batch",
                              Entries=[_send_params(entry, batch=True) for entry in entries])
        return {"Successful": response.get("Successful", []), "Failed": response.get("Failed", [])}

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
        return list(self._call("change_message_visibility_batch", Entries=batch).get("Failed", []))

    def delete(self, receipt_handle: str, message_id: str | None = None) -> None:
        self._call("delete_message", message_id, ReceiptHandle=receipt_handle)

    def delete_batch(self, receipt_handles: list[str]) -> list[dict[str, Any]]:
        if not receipt_handles:
            return []
        batch = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipt_handles)]
        return list(self._call("delete_message_batch", Entries=batch).get("Failed", []))

    def get_attributes(self) -> dict[str, str]:
        return dict(self._call("get_queue_attributes", AttributeNames=["All"]).get("Attributes", {}))

    def purge(self) -> None:
        self._call("purge_queue")

    def heartbeat_queue(self) -> "SqsQueue":
        if self._heartbeat is None:
            # A client of its own: a signal handler must never reuse the task's client,
            # whose connection pool lock the interrupted code may hold.
            client = make_client(self.url, read_timeout=10) if self._owns_client else _twin_client(self.client)
            self._heartbeat = SqsQueue(self.url, client)
            self._heartbeat._owns_client = True
        return self._heartbeat

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.close()
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
