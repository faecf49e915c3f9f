"""A stub SQS endpoint that accepts every SendMessageBatch and keeps nothing (for client-memory runs).

Run: ``python bench/sink.py PORT_FILE``; it writes its port to PORT_FILE and serves
until killed. It speaks the SQS JSON protocol: SendMessageBatch answers every entry
as Successful (with the body's MD5), GetQueueUrl and GetQueueAttributes answer
plausibly, anything else gets an empty object.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK would add ~40 ms to every answer, and the sink, not the client, would set the pace.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        action = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        if action == "SendMessageBatch":
            answer: dict = {"Successful": [
                {"Id": entry["Id"], "MessageId": entry["Id"],
                 "MD5OfMessageBody": hashlib.md5(entry["MessageBody"].encode()).hexdigest()}
                for entry in body.get("Entries", [])], "Failed": []}
        elif action == "GetQueueUrl":
            answer = {"QueueUrl": f"http://127.0.0.1:{self.server.server_port}/123456789012/{body['QueueName']}"}
        elif action == "GetQueueAttributes":
            answer = {"Attributes": {"ApproximateNumberOfMessages": "0"}}
        else:
            answer = {}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as port_file:
        port_file.write(str(server.server_port))
    server.serve_forever()
