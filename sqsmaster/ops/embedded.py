"""An embedded SQS-compatible server (moto's) on 127.0.0.1, for the demo, tests and benchmarks.

moto is an optional dependency: ``pip install 'sqsmaster[demo]'``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ..errors import ConfigurationError

INSTALL_HINT = "the embedded SQS server needs moto: pip install 'sqsmaster[demo]'"


class EmbeddedSQS:
    """moto's threaded server on a free loopback port; a context manager.

    ``endpoint`` is its URL; :meth:`create_queue` makes a queue and returns its URL.
    """

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ConfigurationError(INSTALL_HINT) from exc
        # moto checks no credentials, but boto3 wants some to sign with.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "sqsmaster")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sqsmaster")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""
        self._client: Any = None

    def start(self) -> "EmbeddedSQS":
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._server.stop()

    def __enter__(self) -> "EmbeddedSQS":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")
        return self._client

    def create_queue(self, name: str, *, visibility_timeout: int = 30, dead_letter_url: str | None = None,
                     max_receive_count: int = 3, **attributes: str) -> str:
        """Create a queue; with ``dead_letter_url``, messages move there after ``max_receive_count`` receives."""
        attrs = {"VisibilityTimeout": str(visibility_timeout), **attributes}
        if dead_letter_url is not None:
            arn = self.client.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                                                 "maxReceiveCount": str(max_receive_count)})
        return str(self.client.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])
