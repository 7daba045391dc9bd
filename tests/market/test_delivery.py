"""Outgoing webhook transport: svix-verified signatures, classification, deadlines, SSRF guard.

Traffic goes only to receivers on 127.0.0.1. Private, link-local, multicast and public
addresses are exercised on the check alone (a fake resolver hands them out): nothing is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from svix.webhooks import Webhook as SvixWebhook

from market.errors import DestinationRefusedError
from market.outbound.transport import (
    DEFAULT_SCHEDULE,
    RETRY_AFTER_CAP_S,
    DeliveryOutcome,
    ResolvedDestination,
    check_destination,
    deliver,
    generate_secret,
    is_public_address,
    retry_delay,
    sign,
)

LOCAL = frozenset({"127.0.0.1"})
BODY = b'{"type":"credits.purchase_approved","data":{"purchase_id":"p-1","credits":100}}'


@dataclass
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"received":true}'
    hold: bool = False  # read the request, then answer nothing (until the test ends)
    trickle: bool = False  # status line, then one header byte every 50 ms (until the end)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | str  # True, or why svix refused the signature


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks signatures with svix and follows a script."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.secret = generate_secret()
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.accepted = 0
        self.server_names: list[str | None] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                conn, address = self.socket.accept()
                with receiver._lock:
                    receiver.accepted += 1  # every TCP connection, even one TLS then refuses
                if tls is not None:
                    conn.settimeout(5)
                    conn = tls.wrap_socket(conn, server_side=True)
                    conn.settimeout(None)
                return conn, address

        self.server = Server(("127.0.0.1", 0), _handler(self))
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits for the loop to notice, once per test.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, path: str = "/hooks", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def record(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            return self.replies.popleft() if self.replies else Reply()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            try:
                SvixWebhook(receiver.secret).verify(body, headers)
                verified: bool | str = True
            except Exception as exc:
                verified = repr(exc)
            reply = receiver.record(Seen(self.path, headers, body, verified))
            try:
                # Bounded at 3 s, so a client without a deadline fails the test, not hangs it.
                give_up = time.monotonic() + 3
                if reply.hold:
                    receiver.release.wait(3)
                elif reply.trickle:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    while time.monotonic() < give_up and not receiver.release.wait(0.05):
                        self.wfile.write(b"a")
                        self.wfile.flush()
                else:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up on us, which is what some tests want

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture()
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(tls)
        receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture()
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    return make_receiver()


@dataclass
class FakeDNS:
    """A resolver that knows only `names`; it records every lookup in `calls`."""

    names: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers: list[Any] = []
        for text in self.names[host]:
            if ipaddress.ip_address(text).version == 6:
                answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port, 0, 0)))
            else:
                answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port)))
        return answers


@pytest.fixture()
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


def send(receiver: Receiver, url: str | None = None, **kwargs: Any) -> DeliveryOutcome:
    options: dict[str, Any] = {
        "secret": receiver.secret,
        "msg_id": "msg_2Yx9kQ",
        "timestamp": datetime.now(UTC),
        "body": BODY,
        "allowed_hosts": LOCAL,
        "total_timeout": 5.0,
    }
    options.update(kwargs)
    return deliver(url or receiver.url(), **options)


# --- secrets and signatures ---------------------------------------------------------------


def test_generate_secret_is_a_fresh_standard_webhooks_secret():
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert 24 <= len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) <= 64


def test_sign_headers_verify_with_svix_and_by_hand():
    secret = generate_secret()
    at = datetime.now(UTC)
    headers = sign(secret, msg_id="msg_1", timestamp=at, body=BODY)
    SvixWebhook(secret).verify(BODY, headers)
    # svix delegates to standardwebhooks, so recompute the spec's HMAC independently too.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = b"msg_1." + headers["webhook-timestamp"].encode() + b"." + BODY
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": f"v1,{expected}",
    }


def test_sign_converts_other_time_zones_and_refuses_naive_timestamps():
    secret = generate_secret()
    now = datetime.now(UTC)
    local = now.astimezone(timezone(timedelta(hours=-3)))  # Buenos Aires
    headers = sign(secret, msg_id="msg_1", timestamp=local, body=BODY.decode())
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    SvixWebhook(secret).verify(BODY, headers)
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(secret, msg_id="msg_1", timestamp=datetime.now(), body=BODY)


# --- delivery to a real receiver ----------------------------------------------------------


def test_delivers_a_signed_json_post_that_svix_verifies(receiver: Receiver):
    outcome = send(receiver, receiver.url("/hooks/in?source=spartan"))

    assert outcome == DeliveryOutcome(
        status_code=200,
        duration_ms=outcome.duration_ms,
        error=None,
        retryable=False,
        retry_after_s=None,
        response_excerpt='{"received":true}',
    )
    assert outcome.succeeded
    [seen] = receiver.requests
    assert seen.verified is True
    assert seen.body == BODY
    assert seen.path == "/hooks/in?source=spartan"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["User-Agent"] == "SpartanMarket-Webhooks/1"
    assert seen.headers["Host"] == f"127.0.0.1:{receiver.port}"


def test_every_attempt_carries_the_same_message_id(receiver: Receiver):
    receiver.answer(Reply(500), Reply(500), Reply(200))
    start = datetime.now(UTC)

    outcomes = [
        send(receiver, msg_id="msg_same", timestamp=start + timedelta(seconds=attempt))
        for attempt in range(3)
    ]

    assert [(o.status_code, o.retryable, o.succeeded) for o in outcomes] == [
        (500, True, False),
        (500, True, False),
        (200, False, True),
    ]
    assert [seen.headers["webhook-id"] for seen in receiver.requests] == ["msg_same"] * 3
    assert all(seen.verified is True for seen in receiver.requests)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_server_errors_timeouts_and_throttling_are_retryable(receiver: Receiver, status: int):
    receiver.answer(Reply(status, body=b"busy"))

    outcome = send(receiver)

    assert (outcome.status_code, outcome.retryable) == (status, True)
    assert outcome.error == f"HTTP {status}"
    assert outcome.response_excerpt == "busy"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_client_errors_are_final(receiver: Receiver, status: int):
    receiver.answer(Reply(status))

    outcome = send(receiver)

    assert (outcome.status_code, outcome.retryable, outcome.succeeded) == (status, False, False)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_reported_and_never_followed(
    make_receiver: Callable[..., Receiver], status: int
):
    first, elsewhere = make_receiver(), make_receiver()
    first.answer(Reply(status, headers={"Location": elsewhere.url("/stolen")}))

    outcome = send(first)

    assert (outcome.status_code, outcome.retryable) == (status, False)
    assert "not followed" in (outcome.error or "")
    assert (elsewhere.accepted, elsewhere.requests) == (0, [])


def test_a_large_body_is_sent_whole_and_verifies(receiver: Receiver):
    body = b'{"padding":"' + b"p" * 1_000_000 + b'"}'

    assert send(receiver, body=body).succeeded
    assert receiver.requests[0].body == body
    assert receiver.requests[0].verified is True


def test_proxy_settings_in_the_environment_are_ignored(
    make_receiver: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch
):
    # A proxy would connect on our behalf to whatever the name resolves to there.
    target, proxy = make_receiver(), make_receiver()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url("/"))

    assert send(target).succeeded
    assert (proxy.accepted, len(target.requests)) == (0, 1)


def test_response_excerpt_is_at_most_4_kib(receiver: Receiver):
    receiver.answer(Reply(400, body=b"x" * 100_000))

    outcome = send(receiver)

    assert outcome.response_excerpt == "x" * 4096


def test_retry_after_seconds_is_honoured(receiver: Receiver):
    receiver.answer(Reply(429, headers={"Retry-After": "120"}))

    outcome = send(receiver)

    assert (outcome.retryable, outcome.retry_after_s) == (True, 120.0)
    delay = retry_delay(1, schedule=DEFAULT_SCHEDULE, retry_after_s=outcome.retry_after_s)
    assert delay is not None and delay >= 120.0


def test_retry_after_http_date_is_honoured_and_capped(receiver: Receiver):
    later = datetime.now(UTC) + timedelta(seconds=90)
    receiver.answer(
        Reply(503, headers={"Retry-After": format_datetime(later, usegmt=True)}),
        Reply(503, headers={"Retry-After": "999999999"}),
        Reply(503, headers={"Retry-After": "soon, promise"}),
    )

    by_date, huge, garbage = send(receiver), send(receiver), send(receiver)

    assert by_date.retry_after_s is not None and 80 <= by_date.retry_after_s <= 90
    assert huge.retry_after_s == RETRY_AFTER_CAP_S
    assert garbage.retry_after_s is None and garbage.retryable


def test_a_receiver_that_never_answers_is_cut_at_the_total_timeout(receiver: Receiver):
    receiver.answer(Reply(hold=True))

    started = time.monotonic()
    outcome = send(receiver, total_timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.4 <= elapsed < 0.5 + 0.5
    assert outcome.status_code is None and outcome.retryable
    assert (outcome.error or "").startswith("timeout during response")


def test_a_receiver_trickling_bytes_cannot_outlast_the_total_timeout(receiver: Receiver):
    # A byte every 50 ms never trips a per-read timeout; only the overall deadline stops it.
    receiver.answer(Reply(trickle=True))

    started = time.monotonic()
    outcome = send(receiver, total_timeout=0.5, connect_timeout=0.5)
    elapsed = time.monotonic() - started

    assert elapsed < 0.5 + 0.5
    assert outcome.status_code is None and outcome.retryable
    assert (outcome.error or "").startswith("timeout during response")


def test_a_closed_port_is_a_retryable_network_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        outcome = deliver(
            f"http://127.0.0.1:{port}/",
            secret=generate_secret(),
            msg_id="msg_1",
            timestamp=datetime.now(UTC),
            body=BODY,
            allowed_hosts=LOCAL,
        )
    assert outcome.status_code is None and outcome.retryable
    assert (outcome.error or "").startswith("connect failed: ConnectionRefusedError")


# --- the SSRF guard -----------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [frozenset(), frozenset({"localhost", "127.0.0.2"})])
def test_loopback_receiver_not_allowed_is_refused_without_a_connection(
    receiver: Receiver, allowed: frozenset[str]
):
    refused = send(receiver, allowed_hosts=allowed)

    assert refused.status_code is None and not refused.retryable
    assert (refused.error or "").startswith("destination refused:")
    assert "loopback" in (refused.error or "")
    # Control: an allowed delivery is the first connection the server ever accepts. Had the
    # refused attempt connected, its connection would have been accepted before this one.
    assert send(receiver).succeeded
    assert receiver.accepted == 1
    assert len(receiver.requests) == 1


def test_the_checked_address_is_the_one_connected_to(receiver: Receiver, fake_dns: FakeDNS):
    # Resolving again at connect time would let a rebinding DNS server swap in another
    # address after the check; the fake resolver fails the test if asked a second time.
    fake_dns.names["hooks.example"] = ["127.0.0.1"]

    outcome = send(
        receiver, receiver.url(host="hooks.example"), allowed_hosts=frozenset({"hooks.example"})
    )

    assert outcome.succeeded, outcome.error
    assert fake_dns.calls == ["hooks.example"]
    assert receiver.requests[0].headers["Host"] == f"hooks.example:{receiver.port}"


REFUSED = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "127.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "192.0.2.10",
    "::",
    "ff02::1",
    "fec0::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:db8::1",
]
ACCEPTED = ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused(address: str, fake_dns: FakeDNS):
    fake_dns.names["inside.example"] = [address]
    assert not is_public_address(ipaddress.ip_address(address))

    with pytest.raises(DestinationRefusedError, match="resolves to") as by_name:
        check_destination("https://inside.example/hook", allowed_hosts=frozenset())
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(DestinationRefusedError):
        check_destination(f"http://{literal}:8080/hook", allowed_hosts=frozenset())

    assert str(ipaddress.ip_address(address)) in by_name.value.detail


@pytest.mark.parametrize("address", ACCEPTED)
def test_global_unicast_addresses_are_accepted(address: str, fake_dns: FakeDNS):
    fake_dns.names["public.example"] = [address]
    assert is_public_address(ipaddress.ip_address(address))

    destination = check_destination("https://public.example/hook?x=1", allowed_hosts=frozenset())

    assert (destination.scheme, destination.host, destination.port) == (
        "https",
        "public.example",
        443,
    )
    assert destination.address == address
    assert destination.target == "/hook?x=1"


def test_one_inside_answer_among_public_ones_refuses_the_host(fake_dns: FakeDNS):
    fake_dns.names["mixed.example"] = ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(DestinationRefusedError, match=r"10\.1\.2\.3.*private"):
        check_destination("https://mixed.example/", allowed_hosts=frozenset())


def test_allowed_hosts_match_the_exact_host_string(fake_dns: FakeDNS):
    fake_dns.names["localhost"] = ["127.0.0.1"]

    assert check_destination("http://localhost:9/", allowed_hosts=frozenset({"localhost"})) == (
        ResolvedDestination("http", "localhost", 9, "127.0.0.1", ("127.0.0.1",), "/")
    )
    with pytest.raises(DestinationRefusedError, match="loopback"):
        check_destination("http://127.0.0.1:9/", allowed_hosts=frozenset({"localhost"}))
    with pytest.raises(DestinationRefusedError, match="loopback"):
        check_destination("http://localhost:9/", allowed_hosts=frozenset({"127.0.0.1"}))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/file",
        "file:///etc/passwd",
        "gopher://hooks.example:70/_",
        "javascript:alert(1)",
        "hooks.example/path",
        "//hooks.example/path",
        "http:///no-host",
        "https://user:secret@hooks.example/",
        "http://hooks.example:99999/",
        "http://hooks.example:0/",
        "http://hooks.example/a b",
        "http://hooks.example/\r\nX-Injected: 1",
        # Brackets that hold no IPv6 address (found by schemathesis: a 500 before).
        "http://[4ad6:f00:27df]?x",
    ],
)
def test_unusable_urls_are_refused(url: str, fake_dns: FakeDNS):
    fake_dns.names["hooks.example"] = ["93.184.216.34"]

    with pytest.raises(DestinationRefusedError):
        check_destination(url, allowed_hosts=frozenset({"hooks.example"}))
    outcome = deliver(
        url,
        secret=generate_secret(),
        msg_id="msg_1",
        timestamp=datetime.now(UTC),
        body=BODY,
        allowed_hosts=frozenset({"hooks.example"}),
    )
    assert (outcome.error or "").startswith("destination refused:")
    assert not outcome.retryable
    assert fake_dns.calls == []  # refused before any lookup, let alone a connection


def test_an_unresolvable_host_is_refused_by_the_check_and_retried_by_delivery(fake_dns: FakeDNS):
    with pytest.raises(DestinationRefusedError, match="cannot resolve"):
        check_destination("https://gone.example/", allowed_hosts=frozenset())

    outcome = deliver(
        "https://gone.example/",
        secret=generate_secret(),
        msg_id="msg_1",
        timestamp=datetime.now(UTC),
        body=BODY,
        allowed_hosts=frozenset(),
    )
    assert outcome.retryable and (outcome.error or "").startswith("cannot resolve host")


# --- HTTPS: pinned address, certificate checked for the host name -------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.example (key, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture()
def tls_receiver(
    make_receiver: Callable[..., Receiver], certificate: tuple[Path, Path], fake_dns: FakeDNS
) -> tuple[Receiver, ssl.SSLContext]:
    key_path, cert_path = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    fake_dns.names["hooks.example"] = ["127.0.0.1"]
    fake_dns.names["other.example"] = ["127.0.0.1"]
    return make_receiver(tls=server), client


def test_https_sends_sni_and_checks_the_certificate_for_the_host_name(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
):
    receiver, client = tls_receiver

    outcome = send(
        receiver,
        receiver.url(scheme="https", host="hooks.example"),
        allowed_hosts=frozenset({"hooks.example"}),
        ssl_context=client,
    )

    assert outcome.succeeded, outcome.error
    assert receiver.server_names == ["hooks.example"]
    assert receiver.requests[0].verified is True
    assert receiver.requests[0].headers["Host"] == f"hooks.example:{receiver.port}"


def test_https_refuses_a_certificate_for_another_name(
    tls_receiver: tuple[Receiver, ssl.SSLContext],
):
    receiver, client = tls_receiver

    outcome = send(
        receiver,
        receiver.url(scheme="https", host="other.example"),
        allowed_hosts=frozenset({"other.example"}),
        ssl_context=client,
    )

    assert outcome.status_code is None and outcome.retryable
    assert "SSLCertVerificationError" in (outcome.error or "")
    assert receiver.requests == []


# --- the retry schedule -------------------------------------------------------------------


def test_default_schedule_spreads_at_least_eight_retries_over_about_a_day():
    assert len(DEFAULT_SCHEDULE) >= 8
    assert 20 * 3600 <= sum(DEFAULT_SCHEDULE) <= 30 * 3600
    assert list(DEFAULT_SCHEDULE) == sorted(DEFAULT_SCHEDULE)


def test_retry_delay_jitters_within_twenty_percent():
    rng = random.Random(7)
    for attempt, base in enumerate(DEFAULT_SCHEDULE, start=1):
        delays = [
            retry_delay(attempt, schedule=DEFAULT_SCHEDULE, retry_after_s=None, rng=rng)
            for _ in range(200)
        ]
        assert all(d is not None and 0.8 * base <= d <= 1.2 * base for d in delays)
        assert min(delays) < 0.9 * base < 1.1 * base < max(delays)  # type: ignore[operator]


def test_retry_delay_waits_at_least_retry_after_and_ends_with_the_schedule():
    rng = random.Random(7)
    assert retry_delay(1, schedule=(5.0, 30.0), retry_after_s=600.0, rng=rng) == 600.0
    short = retry_delay(2, schedule=(5.0, 30.0), retry_after_s=1.0, rng=rng)
    assert short is not None and 24.0 <= short <= 36.0
    assert retry_delay(3, schedule=(5.0, 30.0), retry_after_s=600.0, rng=rng) is None
    assert (
        retry_delay(len(DEFAULT_SCHEDULE) + 1, schedule=DEFAULT_SCHEDULE, retry_after_s=None)
        is None
    )
    with pytest.raises(ValueError):
        retry_delay(0, schedule=DEFAULT_SCHEDULE, retry_after_s=None)
