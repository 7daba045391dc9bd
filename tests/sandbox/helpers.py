"""What the sandbox's tests share: a loopback receiver that records notifications, the
control API, the real SDK pointed at the sandbox, and signature checks by the SDK's own
validator."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import mercadopago
import requests
from mercadopago.webhook.validator import WebhookSignatureValidator

from market.payments.mercadopago.sdk import PooledHttpClient
from tests.support.poll import wait_for

TOKEN = "TEST-sandbox-token"
SECRET = "sandbox-webhook-secret"
DELAYS = (0.05, 0.05, 0.05)


@dataclass
class Hit:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def form(self) -> str:
        """ "webhook" (?data.id=&type=) or "ipn" (?id=&topic=)."""
        return "ipn" if "topic" in self.query else "webhook"


class Receiver:
    """A loopback HTTP server recording notifications; answers `statuses` in turn, then 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.statuses: deque[int] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = urlsplit(self.path)
                with receiver._lock:
                    receiver.hits.append(
                        Hit(
                            parts.path,
                            parse_qs(parts.query),
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw),
                        )
                    )
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/mp"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def wait(self, count: int, form: str | None = None) -> list[Hit]:
        """The first `count` hits (of `form` when given), once they have arrived."""

        def arrived() -> list[Hit] | None:
            hits = [h for h in list(self.hits) if form is None or h.form == form]
            return hits if len(hits) >= count else None

        return wait_for(arrived, timeout=5, what=f"{count} {form or ''} notifications")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Sandbox:
    url: str

    def control(self, path: str, payload: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{self.url}/_sandbox{path}", json=payload or {}, timeout=5)

    def settings(self, **changes: Any) -> dict[str, Any]:
        answer = self.control("/settings", changes)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def deliveries(self, **filters: Any) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/_sandbox/webhooks", params=filters, timeout=5).json()

    def sdk(self) -> mercadopago.SDK:
        """MercadoPago's official SDK, sent to the sandbox."""
        client = PooledHttpClient(self.url, connect_timeout=3, read_timeout=5)
        return mercadopago.SDK(TOKEN, http_client=client)


def preference_body(reference: str = "purchase-1", **extra: Any) -> dict[str, Any]:
    return {
        "items": [
            {
                "id": "credits-100",
                "title": "100 credits",
                "quantity": 2,
                "unit_price": Decimal("150.25"),
                "currency_id": "ARS",
            }
        ],
        "external_reference": reference,
        "metadata": {"purchase_id": reference},
        **extra,
    }


def webhooks_only(url: str) -> str:
    """The notification_url that asks MercadoPago for webhooks without IPN copies."""
    return f"{url}{'&' if '?' in url else '?'}source_news=webhooks"


def paid(sandbox: Sandbox, pref_id: str, **payload: Any) -> dict[str, Any]:
    answer = sandbox.control(f"/preferences/{pref_id}/pay", {"status": "approved", **payload})
    assert answer.status_code == 201, answer.text
    return answer.json()


def verify(hit: Hit, data_id: str | None) -> None:
    """The SDK's validator accepts the hit's signature (any age) for `data_id`."""
    WebhookSignatureValidator.validate(
        hit.headers.get("x-signature"), hit.headers.get("x-request-id"), data_id, SECRET
    )


def assert_signed(hit: Hit, payment_id: int) -> None:
    assert hit.query["data.id"] == [str(payment_id)]
    assert hit.query["type"] == ["payment"]
    verify(hit, hit.query["data.id"][0])
