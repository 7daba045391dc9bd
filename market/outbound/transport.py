"""Transport for signed outgoing webhooks (Standard Webhooks): sign, vet the destination, POST.

The SSRF guard has two halves that only work together: `check_destination` (destinations.py)
resolves the host once and refuses anything that is not a global unicast address, and `deliver`
then connects to exactly the address that was vetted (never resolving again), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot steer the request
inside.
Redirects are never followed, proxies from the environment are never used (they would make
the pinned address irrelevant), and every read runs against one deadline so a receiver that
trickles bytes cannot hold a worker past `total_timeout`.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import ipaddress
import math
import random
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import certifi
from standardwebhooks import Webhook

from market.errors import DestinationRefusedError
from market.outbound.destinations import ResolvedDestination, vet_url

# Callers vet a URL with the transport's own names before they send to it.
from market.outbound.destinations import check_destination as check_destination
from market.outbound.destinations import is_public_address as is_public_address

# At least 8 retries spread over about a day (25.8 h in all), as the notifications design asks.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 36000)
JITTER = 0.2
# A receiver's Retry-After is honoured up to our own longest step: a "come back next year"
# must not park a delivery beyond the schedule it belongs to.
RETRY_AFTER_CAP_S = max(DEFAULT_SCHEDULE)
EXCERPT_BYTES = 4096
USER_AGENT = "SpartanMarket-Webhooks/1"


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one delivery attempt achieved; `error` is None exactly when the receiver said 2xx."""

    status_code: int | None
    duration_ms: int
    error: str | None
    retryable: bool
    retry_after_s: float | None
    response_excerpt: str

    @property
    def succeeded(self) -> bool:
        return self.error is None


def generate_secret() -> str:
    """Return a fresh Standard Webhooks secret, `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, *, msg_id: str, timestamp: datetime, body: bytes | str) -> dict[str, str]:
    """Return the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers for `body`."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    # standardwebhooks' sign() does `timestamp.replace(tzinfo=utc)`, which silently shifts
    # any non-UTC aware datetime; convert first so header and signature agree.
    utc = timestamp.astimezone(UTC)
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(utc.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, utc, text),
    }


def deliver(
    url: str,
    *,
    secret: str,
    msg_id: str,
    timestamp: datetime,
    body: bytes,
    allowed_hosts: frozenset[str],
    connect_timeout: float = 3.0,
    total_timeout: float = 10.0,
    user_agent: str = USER_AGENT,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryOutcome:
    """POST `body`, signed, to `url` once and report the outcome; network trouble never raises."""
    started = time.monotonic()
    deadline = started + total_timeout

    def outcome(
        error: str | None,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
        excerpt: str = "",
    ) -> DeliveryOutcome:
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return DeliveryOutcome(status, elapsed_ms, error, retryable, retry_after_s, excerpt)

    try:
        destination = vet_url(url, allowed_hosts)
    except DestinationRefusedError as exc:
        return outcome(f"destination refused: {exc.detail}")
    except OSError as exc:
        # A resolver hiccup is transient; the schedule bounds how long a dead name is retried.
        return outcome(str(exc), retryable=True)

    headers = {
        "Host": _host_header(destination),
        "User-Agent": user_agent,
        "Content-Type": "application/json",
        "Connection": "close",
        **sign(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }
    phase = "connect"
    raw: socket.socket | None = None
    stream: socket.socket | None = None
    try:
        raw = stream = _connect(destination, deadline=deadline, connect_timeout=connect_timeout)
        if destination.scheme == "https":
            phase = "TLS handshake"
            raw.settimeout(_remaining(deadline))
            # SNI and certificate checks are for the URL's host name, not the pinned address.
            context = ssl_context or _default_ssl_context()
            stream = context.wrap_socket(raw, server_hostname=destination.host)
        phase = "request"
        connection = http.client.HTTPConnection(destination.host, destination.port)
        connection.sock = _DeadlineSocket(stream, deadline)  # type: ignore[assignment]
        connection.request("POST", destination.target, body=body, headers=headers)
        phase = "response"
        response = connection.getresponse()
        status, response_headers = response.status, response.headers
        try:
            excerpt = response.read(EXCERPT_BYTES)
        except (OSError, http.client.HTTPException):
            excerpt = b""  # the status is what counts; the body is only for the log
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            return outcome(f"timeout during {phase}: {_describe(exc)}", retryable=True)
        return outcome(f"{phase} failed: {_describe(exc)}", retryable=True)
    finally:
        # Closing the TLS socket is enough once it wrapped (the raw one is detached then).
        for sock in (stream, raw):
            if sock is not None:
                sock.close()

    text = excerpt.decode("utf-8", errors="replace")
    if 200 <= status < 300:
        return outcome(None, status=status, excerpt=text)
    if status in (408, 429) or 500 <= status < 600:
        retry_after = _parse_retry_after(response_headers.get("Retry-After"))
        return outcome(
            f"HTTP {status}", retryable=True, status=status, retry_after_s=retry_after, excerpt=text
        )
    if 300 <= status < 400:
        location = response_headers.get("Location", "")
        return outcome(
            f"HTTP {status}: redirect to {location!r} not followed", status=status, excerpt=text
        )
    return outcome(f"HTTP {status}", status=status, excerpt=text)


def retry_delay(
    attempt: int,
    *,
    schedule: tuple[float, ...],
    retry_after_s: float | None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before retry number `attempt` (1 = first retry); None when exhausted."""
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    if attempt > len(schedule):
        return None
    # The module-level generator by default: Python reseeds it in every forked worker, where
    # a Random() made before the fork would hand all workers the same jitter.
    uniform = rng.uniform if rng is not None else random.uniform
    delay = schedule[attempt - 1] * uniform(1 - JITTER, 1 + JITTER)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def _host_header(destination: ResolvedDestination) -> str:
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    default = 443 if destination.scheme == "https" else 80
    return host if destination.port == default else f"{host}:{destination.port}"


def _connect(
    destination: ResolvedDestination, *, deadline: float, connect_timeout: float
) -> socket.socket:
    """Open a TCP connection to one of the vetted addresses (numeric: no second lookup)."""
    last: OSError | None = None
    for address in destination.addresses:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(connect_timeout, _remaining(deadline)))
            sock.connect((address, destination.port))
        except OSError as exc:
            sock.close()
            last = exc
            if isinstance(exc, TimeoutError) and time.monotonic() >= deadline:
                break
            continue
        return sock
    assert last is not None
    raise last


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("total timeout exceeded")
    return left


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, built once on first use (not at import)."""
    return ssl.create_default_context(cafile=certifi.where())


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _DeadlineSocket:
    """The socket http.client sees: every send and receive gets only what is left of the budget.

    A per-operation timeout alone would let a receiver that sends one byte every few seconds
    hold the worker for ever; re-arming each call with the remaining time bounds the total.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        # Chunk by chunk: SSLSocket.sendall applies its timeout to each chunk, so a receiver
        # that reads slowly could otherwise stretch a TLS send past the deadline.
        view = memoryview(data)
        while view:
            self._sock.settimeout(_remaining(self._deadline))
            view = view[self._sock.send(view) :]

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        # http.client closes the connection as soon as it has the headers of a
        # `Connection: close` answer; the body is still to be read, so `deliver` closes.
        pass


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)
