"""An HTTP proxy in front of the test server that answers chosen SQS calls with chosen errors.

moto cannot say ``MessageNotInflight`` or ``503 ServiceUnavailable``; this proxy can,
over real HTTP, whichever client makes the call (a twin client included, which a
botocore Stubber on the caller's client would never see). Every other request goes
through to moto unchanged.

    proxy.fail("ChangeMessageVisibility", "AWS.SimpleQueueService.MessageNotInflight", calls={2})
    proxy.hold("ChangeMessageVisibilityBatch", 1.0, calls={1})  # done at the server, answered 1 s late
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FaultProxy:
    """``with FaultProxy(target_endpoint) as proxy:`` then point a client at ``proxy.endpoint``.

    ``calls[operation]`` counts the requests of each SQS operation the proxy saw;
    ``times[operation]`` says when each arrived (``time.monotonic()``).
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.calls: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}
        self._faults: dict[str, tuple[str, int, set[int]]] = {}
        self._holds: dict[str, tuple[float, set[int]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, operation: str, code: str, status: int = 400, calls: set[int] | None = None) -> None:
        """Answer the given calls (1-based, per operation; all when None) of ``operation`` with ``code``."""
        with self._lock:
            self._faults[operation] = (code, status, set(calls) if calls is not None else set())

    def hold(self, operation: str, seconds: float, calls: set[int] | None = None) -> None:
        """Forward the given calls (1-based, per operation; all when None) of ``operation`` at once, but
        answer them ``seconds`` late: the call is done at the server, its caller does not know yet."""
        with self._lock:
            self._holds[operation] = (seconds, set(calls) if calls is not None else set())

    def held(self, operation: str, number: int) -> float:
        """How long to hold the answer to call ``number`` of ``operation`` (s)."""
        with self._lock:
            hold = self._holds.get(operation)
        if hold is None or (hold[1] and number not in hold[1]):
            return 0.0
        return hold[0]

    def count(self, operation: str) -> tuple[int, tuple[str, int] | None]:
        """Count one call of ``operation``; the (code, status) to answer it with, or None to forward it."""
        with self._lock:
            number = self.calls[operation] = self.calls.get(operation, 0) + 1
            self.times.setdefault(operation, []).append(time.monotonic())
            fault = self._faults.get(operation)
        if fault is None or (fault[2] and number not in fault[2]):
            return number, None
        return number, (fault[0], fault[1])

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _operation(headers: http.client.HTTPMessage, body: bytes) -> str:
    target = headers.get("X-Amz-Target", "")
    if target:
        return target.rsplit(".", 1)[-1]
    return parse_qs(body.decode(errors="replace")).get("Action", [""])[0]


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            operation = _operation(self.headers, body)
            number, fault = proxy.count(operation)
            if fault is not None:
                self._answer_error(*fault)
                return
            upstream = http.client.HTTPConnection(*proxy.target, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request("POST", self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                time.sleep(proxy.held(operation, number))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                upstream.close()

        def _answer_error(self, code: str, status: int) -> None:
            short = code.rsplit(".", 1)[-1]
            payload = json.dumps({"__type": f"com.amazonaws.sqs#{short}", "message": f"{code} (fault proxy)"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("x-amzn-query-error", f"{code};Sender")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            pass

    return Handler
