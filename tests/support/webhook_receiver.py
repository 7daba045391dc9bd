"""A webhook receiver on 127.0.0.1 that verifies Standard Webhooks signatures with svix's own
verifier and answers from a script (e.g. fail twice, then succeed)."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from svix.webhooks import Webhook


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool | str  # True, or why svix refused the signature

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Records every request; `secret` must be set (from the endpoint's creation) to verify."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.replies: deque[Reply] = deque()
        self.default = Reply()
        self.requests: list[Seen] = []
        self.connections = 0
        self._lock = threading.Lock()
        receiver = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def get_request(self) -> tuple[Any, Any]:
                conn, address = self.socket.accept()
                with receiver._lock:
                    receiver.connections += 1
                return conn, address

        self.server = Server(("127.0.0.1", 0), _handler(self))
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, path: str = "/hooks", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def answer(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then with `default`."""
        self.replies.extend(replies)

    def take(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            return self.replies.popleft() if self.replies else self.default

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            verified: bool | str
            try:
                Webhook(receiver.secret or "whsec_").verify(body, headers)
                verified = True
            except Exception as exc:
                verified = repr(exc)
            reply = receiver.take(Seen(headers.get("webhook-id", ""), headers, body, verified))
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running() -> Iterator[Receiver]:
    """A started receiver, stopped on exit."""
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
