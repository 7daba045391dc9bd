"""A TCP proxy in front of PostgreSQL that a test can cut and restore.

Cut: every connection through it is dropped at once and new ones are refused (the listening
socket is closed), as when the database host goes away. Restore: it listens again on the
same port, so the processes configured with its URL reconnect by themselves.
"""

from __future__ import annotations

import contextlib
import socket
import threading

ACCEPT_POLL_S = 0.1


class PostgresProxy:
    """Forwards 127.0.0.1:<port> to `upstream`, one pair of pump threads per connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.connections = 0

    @property
    def cut_off(self) -> bool:
        return self._listener is None

    def start(self) -> PostgresProxy:
        """Listen on a free port (the kernel's choice)."""
        self._listen()
        return self

    def url(self, database_url: str) -> str:
        """`database_url` sent through the proxy instead of straight to the server."""
        from sqlalchemy.engine import make_url

        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            dropped, self._sockets = self._sockets, set()
        if listener is not None:
            self._stop.set()
            listener.close()
        for sock in dropped:
            _close(sock)

    def restore(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        # A timeout so the accept loop notices a cut (closing does not wake accept()).
        listener.settimeout(ACCEPT_POLL_S)
        self.port = listener.getsockname()[1]
        self._stop = stop = threading.Event()
        with self._lock:
            self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener, stop), name=f"pgproxy-{self.port}", daemon=True
        ).start()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    server.close()
                    continue
                self._sockets |= {client, server}
                self.connections += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                mine = [s for s in (src, dst) if s in self._sockets]
                self._sockets -= set(mine)
            for sock in mine:
                _close(sock)


def _close(sock: socket.socket) -> None:
    # shutdown() wakes the pump blocked in recv() on this socket; close() alone would not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
