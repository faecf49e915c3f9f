"""A stub SQS endpoint that answers every request after a fixed delay, concurrently, and keeps nothing.

    python bench/sink.py PORT_FILE [--delay 0.02]

It writes its port to PORT_FILE and serves on 127.0.0.1 until killed. Real SQS
answers in 10-30 ms and has, for one client, practically unlimited capacity: this
sink models that. Every request is answered ``--delay`` seconds after it arrived
whatever else is in flight (one asyncio loop, a timer per answer: no thread per
connection, no queueing behind other requests), so the client, not the sink, is
what a benchmark measures. It speaks the SQS JSON protocol: SendMessageBatch and
SendMessage answer every entry as sent (with the body's MD5), GetQueueUrl and
GetQueueAttributes answer plausibly, ReceiveMessage returns no message, anything
else gets an empty object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
from typing import Any

STATUS_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: "


def answer(action: str, request: dict[str, Any], port: int) -> dict[str, Any]:
    """The JSON answer SQS would give to ``action``, without keeping anything."""
    if action == "SendMessageBatch":
        return {"Successful": [{"Id": entry["Id"], "MessageId": entry["Id"],
                                "MD5OfMessageBody": hashlib.md5(entry["MessageBody"].encode()).hexdigest()}
                               for entry in request.get("Entries", [])], "Failed": []}
    if action == "SendMessage":
        return {"MessageId": "0", "MD5OfMessageBody": hashlib.md5(request["MessageBody"].encode()).hexdigest()}
    if action == "GetQueueUrl":
        return {"QueueUrl": f"http://127.0.0.1:{port}/123456789012/{request['QueueName']}"}
    if action == "CreateQueue":
        return {"QueueUrl": f"http://127.0.0.1:{port}/123456789012/{request['QueueName']}"}
    if action == "GetQueueAttributes":
        return {"Attributes": {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0",
                               "ApproximateNumberOfMessagesDelayed": "0"}}
    if action == "ReceiveMessage":
        return {"Messages": []}
    return {}


class SinkProtocol(asyncio.Protocol):
    """One client connection: parse each HTTP/1.1 request, answer it ``delay`` seconds after it arrived."""

    def __init__(self, delay: float, port: int) -> None:
        self.delay = delay
        self.port = port
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.last_due = 0.0  # answers on one connection leave in order, even if two share a due time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Headers and body go out in one write, but the client's next request may be split: no Nagle delay.
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while (request := self._next_request()) is not None:
            action, body = request
            arrived = loop.time()
            try:
                payload = answer(action, json.loads(body or b"{}"), self.port)
            except (ValueError, KeyError) as exc:
                payload = {"__type": "InvalidParameterValue", "message": str(exc)}
            data_out = json.dumps(payload).encode()
            response = STATUS_OK + str(len(data_out)).encode() + b"\r\n\r\n" + data_out
            if self.delay <= 0:
                self._send(response)
                continue
            self.last_due = max(arrived + self.delay, self.last_due)
            loop.call_at(self.last_due, self._send, response)

    def _next_request(self) -> tuple[str, bytes] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        length, action = 0, ""
        for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"x-amz-target":
                action = value.strip().decode().rsplit(".", 1)[-1]
        if len(self.buffer) < end + 4 + length:
            return None
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        return action, body

    def _send(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port_file: str, delay: float) -> None:
    loop = asyncio.get_running_loop()
    port_box = [0]
    server = await loop.create_server(lambda: SinkProtocol(delay, port_box[0]), "127.0.0.1", 0, backlog=1024)
    port_box[0] = server.sockets[0].getsockname()[1]
    with open(port_file, "w") as out:
        out.write(str(port_box[0]))
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port_file", help="where to write the port the sink listens on")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer (default 0)")
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.delay))


if __name__ == "__main__":
    main()
