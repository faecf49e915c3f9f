"""An HTTP proxy on loopback in front of an SQS endpoint that counts every request, per queue and action.

    with CountingProxy(moto_port) as proxy:      # then point clients at proxy.endpoint
        ...
        proxy.counts()  # {(queue name, "SendMessageBatch"): requests, ...}

Counting at the server's door counts every client the same way, whatever library it
uses. Each request is read whole (HTTP/1.1, one at a time per connection, as boto3
sends them), counted under its queue (the last segment of ``QueueUrl``, or
``QueueName``) and action (``X-Amz-Target`` for the JSON protocol, ``Action=`` for the
query protocol) as it arrives, and forwarded; the answer is read whole and passed
back. SQS bills a request once per started 64 KiB of payload:
:meth:`billed` counts each request that way, taking the larger of the request and
answer bodies as its payload.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from urllib.parse import parse_qs

#: SQS bills one request per started 64 KiB chunk of payload.
BILLING_CHUNK = 65_536


def request_key(head: bytes, body: bytes) -> tuple[str, str]:
    """``(queue name, action)`` of one SQS request: JSON protocol or query protocol."""
    action, queue = "", ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-amz-target":
            action = value.strip().decode().rsplit(".", 1)[-1]
    try:
        params = json.loads(body) if action else {k: v[0] for k, v in parse_qs(body.decode()).items()}
    except ValueError:
        params = {}
    action = action or str(params.get("Action", "?"))
    queue = str(params.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1] or str(params.get("QueueName", ""))
    return queue, action


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message: its head (through the blank line) and its body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return head, await reader.readexactly(length)
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        body += size_line + chunk
        if size == 0:
            return head, body


def _chunks(payload: bytes) -> int:
    return max(1, -(-len(payload) // BILLING_CHUNK))


class CountingProxy:
    """``with CountingProxy(target_port) as proxy:`` then talk to ``proxy.endpoint``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._counts: Counter[tuple[str, str]] = Counter()
        self._billed: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="counting-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests so far, per (queue name, action)."""
        with self._lock:
            return dict(self._counts)

    def billed(self) -> dict[tuple[str, str], int]:
        """Billed requests so far (one per started 64 KiB of payload), per (queue name, action)."""
        with self._lock:
            return dict(self._billed)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_writer = None
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            while True:
                head, body = await read_message(client_reader)
                # Counted as it arrives: a long poll cut short by a killed client was still sent (and billed).
                key, chunks = request_key(head, body), _chunks(body)
                with self._lock:
                    self._counts[key] += 1
                    self._billed[key] += chunks
                server_writer.write(head + body)
                await server_writer.drain()
                answer_head, answer_body = await read_message(server_reader)
                with self._lock:
                    self._billed[key] += max(0, _chunks(answer_body) - chunks)
                client_writer.write(answer_head + answer_body)
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.LimitOverrunError):
            pass  # the client closed its connection (or the server went away): nothing to count
        except asyncio.CancelledError:
            pass  # the proxy is shutting down (ending normally keeps asyncio's stream callback quiet)
        finally:
            client_writer.close()
            if server_writer is not None:
                server_writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, limit=4 * 2**20))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> "CountingProxy":
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def shutdown() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(timeout=5)
