"""Bodies over the SQS limit, stored in S3: the message carries a pointer.

With ``TaskManager(url, payload_bucket="s3://bucket/prefix")`` a message larger
than the threshold (default: SQS's 1 MiB) has its body written to
``s3://bucket/prefix/<uuid>`` and is sent with the pointer format of Amazon's
SQS Extended Client libraries, so their consumers understand it too:

- body: ``["software.amazon.payloadoffloading.PayloadS3Pointer",
  {"s3BucketName": "bucket", "s3Key": "prefix/<uuid>"}]``
- message attribute ``ExtendedPayloadSize`` (Number): the size of the stored body.

A consumer fetches the body transparently (:func:`resolve_payload`) and deletes
the object once the message is deleted, i.e. after success; a message that goes
to the dead-letter queue keeps its object for inspection (and its pointer body:
the message's ``sent_body``, which the dead-letter path copies).

A pointer is message content like any other: a malformed one raises
:class:`~sqsmaster.errors.MalformedMessage`, an object that cannot be fetched
:class:`~sqsmaster.errors.QueueError`, and neither can crash a consumer.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from .encoding import MAX_DECODED_BODY, decode_json
from .errors import ConfigurationError, MalformedMessage, QueueError
from .limits import MAX_MESSAGE_SIZE

logger = logging.getLogger(__name__)

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
_LEGACY_SIZE_ATTRIBUTE = "SQSLargePayloadSize"
#: Largest stored body a consumer fetches (bytes): the decoder's own bound, checked before the download.
MAX_PAYLOAD_BYTES = MAX_DECODED_BODY
#: Bucket names as S3 allows them (legacy names included); anything else in a pointer is malformed.
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
#: Longest S3 object key (UTF-8 bytes).
MAX_S3_KEY_BYTES = 1024
#: S3 calls of a consumer fail within this long rather than hold up a worker's shutdown (seconds).
S3_READ_TIMEOUT = 20


def make_s3_client(queue_url: str | None = None) -> Any:
    """An S3 client; for a non-AWS queue host (moto, LocalStack) the same endpoint serves S3."""
    import boto3
    from botocore.config import Config

    from .backends.sqs import endpoint_and_region

    kwargs: dict[str, Any] = {"config": Config(connect_timeout=5, read_timeout=S3_READ_TIMEOUT,
                                               retries={"mode": "standard", "total_max_attempts": 2})}
    if queue_url:
        endpoint, region = endpoint_and_region(queue_url)
        if endpoint is not None:
            kwargs["endpoint_url"] = endpoint
            kwargs["region_name"] = boto3.session.Session().region_name or "us-east-1"
        elif region is not None:
            kwargs["region_name"] = region
    return boto3.client("s3", **kwargs)


class PayloadStore:
    """Where large bodies go: ``s3://bucket/prefix``.

    :param url: ``s3://bucket`` or ``s3://bucket/prefix``
    :param client: a boto3 S3 client (default: :func:`make_s3_client` for ``queue_url``)
    :param threshold: bodies whose message is larger than this many bytes are stored in S3
    """

    def __init__(self, url: str, *, client: Any = None, threshold: int = MAX_MESSAGE_SIZE,
                 queue_url: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigurationError(f"payload_bucket must look like s3://bucket/prefix, not {url!r}")
        if not 0 < threshold <= MAX_MESSAGE_SIZE:
            raise ConfigurationError(f"payload_threshold={threshold} must be in [1, {MAX_MESSAGE_SIZE}]")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.threshold = threshold
        self._queue_url = queue_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_s3_client(self._queue_url)
        return self._client

    def offload(self, body: str, attributes: dict[str, dict[str, str]]) -> tuple[str, dict[str, dict[str, str]]]:
        """Store ``body`` in S3; return the pointer body and the attributes with its size added."""
        key = f"{self.prefix}/{uuid.uuid4().hex}" if self.prefix else uuid.uuid4().hex
        data = body.encode("utf-8")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception as exc:
            raise QueueError(f"storing a {len(data):,}-byte payload in s3://{self.bucket}/{key} failed: {exc}") \
                from exc
        logger.debug("payload of %d bytes stored in s3://%s/%s", len(data), self.bucket, key)
        pointer = json.dumps([POINTER_CLASS, {"s3BucketName": self.bucket, "s3Key": key}])
        return pointer, {**attributes, SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(len(data))}}

    def fetch(self, bucket: str, key: str, limit: int = MAX_PAYLOAD_BYTES) -> str:
        """The stored body. Raises MalformedMessage when it is over ``limit`` bytes or not UTF-8."""
        response = self.client.get_object(Bucket=bucket, Key=key)
        size = int(response.get("ContentLength") or 0)
        if size > limit:
            response["Body"].close()
            raise MalformedMessage(None, f"payload s3://{bucket}/{key} is {size:,} bytes, over the consumer's "
                                         f"limit of {limit:,} (MAX_PAYLOAD_BYTES)")
        data = response["Body"].read(limit + 1)
        if len(data) > limit:
            raise MalformedMessage(None, f"payload s3://{bucket}/{key} is over the consumer's limit of "
                                         f"{limit:,} bytes (MAX_PAYLOAD_BYTES)")
        try:
            return str(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MalformedMessage(None, f"payload s3://{bucket}/{key} is not UTF-8 text ({exc})") from None

    def delete(self, bucket: str, key: str) -> None:
        """Delete a stored body; logs (never raises) on failure: the message was already handled."""
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            logger.warning("payload s3://%s/%s not deleted (%s); remove it by hand", bucket, key, exc)


def parse_pointer(message: Any) -> tuple[str, str] | None:
    """``(bucket, key)`` if the message is an S3 pointer, None if it is not one.

    A message is a pointer when it carries the size attribute and its body is a JSON array
    whose first item is the pointer class. Raises :class:`MalformedMessage` when such a body
    does not name a bucket and a key as S3 allows them.
    """
    attributes = getattr(message, "message_attributes", None) or {}
    if SIZE_ATTRIBUTE not in attributes and _LEGACY_SIZE_ATTRIBUTE not in attributes:
        return None
    message_id = getattr(message, "message_id", None)
    try:
        content = decode_json(getattr(message, "body", None), message_id)
    except MalformedMessage:
        return None  # not a pointer at all: the task decoder reports what is wrong with it
    if not isinstance(content, list) or not content or content[0] != POINTER_CLASS:
        return None
    pointer = content[1] if len(content) == 2 else None
    bucket = pointer.get("s3BucketName") if isinstance(pointer, dict) else None
    key = pointer.get("s3Key") if isinstance(pointer, dict) else None
    if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket):
        raise MalformedMessage(message_id, f"S3 payload pointer without a valid s3BucketName: {str(content)[:200]}")
    if not isinstance(key, str) or not key or len(key.encode("utf-8", "replace")) > MAX_S3_KEY_BYTES:
        raise MalformedMessage(message_id, f"S3 payload pointer without a valid s3Key: {str(content)[:200]}")
    return bucket, key


def resolve_payload(message: Any, store: PayloadStore | None) -> bool:
    """If ``message`` points to S3, replace its body with the stored one and delete the object after
    the message is deleted. Returns True if it was a pointer.

    Raises MalformedMessage for a malformed pointer or a stored body a consumer must not read
    (over :data:`MAX_PAYLOAD_BYTES`, not UTF-8), QueueError when the fetch fails (a missing
    bucket or key included: the redrive policy ends such a message). ``store`` gives the S3
    client; None makes one for the message's queue. The pointer body stays in ``sent_body``.
    """
    pointer = parse_pointer(message)
    if pointer is None:
        return False
    bucket, key = pointer
    message_id = getattr(message, "message_id", None)
    if store is None:
        store = PayloadStore(f"s3://{bucket}", queue_url=getattr(message, "queue_url", None))
    try:
        body = store.fetch(bucket, key)
    except MalformedMessage as exc:
        raise MalformedMessage(message_id, exc.reason) from None
    except Exception as exc:
        raise QueueError(f"message {message_id}: fetching payload s3://{bucket}/{key} failed: {exc}") from exc
    message.sent_body = message.body  # what the dead-letter path must copy: the pointer, not the body
    message.body = body
    after_delete = getattr(message, "after_delete", None)
    if after_delete is not None:
        after_delete(lambda _message: store.delete(bucket, key))
    return True
