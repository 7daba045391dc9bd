"""A corpus of hostile MercadoPago notifications sent to the real webhook endpoint.

tests/webapp/test_credits.py already refuses no signature, a forged secret, a future `ts`, a
signature for another data.id and a garbage header; tests/market/test_mp_signature.py checks
the manifest rules. Here: the rest of what the internet can send. Every refusal is the
documented status with a problem+json body, and leaves no inbox row, so no settlement job
and no money. Notifications that are signed but name nothing we act on are answered 200
"ignored" (MERCADOPAGO.md: answer 200 to what you do not act on), also storing nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from market.models import MercadoPagoPayment, PaymentEvent

WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"
REQUEST_ID = "6f1f3a8e-2d1c-4c51-9a55-0c1d2e3f4a5b"


def sign(
    secret: str, data_id: str | None, request_id: str = REQUEST_ID, ts: int | None = None
) -> str:
    ts = int(time.time() * 1000) if ts is None else ts
    manifest = f"request-id:{request_id};ts:{ts};"
    if data_id is not None:
        manifest = f"id:{data_id};" + manifest
    return f"ts={ts},v1={hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()}"


def notification(data_id: object, **changes: object) -> bytes:
    body = {
        "action": "payment.updated",
        "api_version": "v1",
        "data": {"id": data_id},
        "date_created": "2026-01-01T00:00:00Z",
        "id": 4_000_000_000 + secrets.randbelow(10**9),
        "live_mode": False,
        "type": "payment",
        "user_id": "44444",
    }
    return json.dumps({**body, **changes}).encode()


@dataclass
class Attack:
    """One request: the data.id it names (to look for rows), query, body and headers."""

    data_id: str
    query: str | None
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    environ: dict[str, str] = field(default_factory=dict)

    def send(self, client: FlaskClient) -> TestResponse:
        url = WEBHOOK if self.query is None else f"{WEBHOOK}?{self.query}"
        return client.post(
            url,
            data=self.body,
            headers={"x-request-id": REQUEST_ID, **self.headers},
            content_type=self.content_type,
            environ_overrides=self.environ,
        )


def _payment_query(data_id: str) -> str:
    return f"data.id={data_id}&type=payment"


# name -> (expected status, builder(secret, fresh numeric id) -> Attack)
Builder = Callable[[str, str], Attack]
CORPUS: dict[str, tuple[int, Builder]] = {
    # The x-signature header in shapes the parser must refuse (401), never crash on.
    "signature_empty_parts": (
        401,
        lambda s, i: Attack(i, _payment_query(i), notification(i), {"x-signature": "ts=,v1="}),
    ),
    "signature_without_ts": (
        401,
        lambda s, i: Attack(
            i, _payment_query(i), notification(i), {"x-signature": sign(s, i).split(",")[1]}
        ),
    ),
    "signature_without_v1": (
        401,
        lambda s, i: Attack(
            i, _payment_query(i), notification(i), {"x-signature": sign(s, i).split(",")[0]}
        ),
    ),
    "signature_ts_not_a_number": (
        401,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i),
            {"x-signature": "ts=1e12," + sign(s, i).split(",")[1]},
        ),
    ),
    "signature_ts_in_the_future": (
        401,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i),
            {"x-signature": sign(s, i, ts=int(time.time() * 1000) + 3_600_000)},
        ),
    ),
    "signature_ten_thousand_v1_values": (
        401,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i),
            {"x-signature": "ts=1," + ",".join(["v1=" + "0" * 64] * 10_000)},
        ),
    ),
    "signature_for_another_request_id": (
        401,
        lambda s, i: Attack(
            i, _payment_query(i), notification(i), {"x-signature": sign(s, i, "other-request")}
        ),
    ),
    "signature_without_the_request_id_header": (
        401,
        lambda s, i: Attack(
            i, _payment_query(i), notification(i), {"x-signature": sign(s, i), "x-request-id": ""}
        ),
    ),
    # Signed for the body's data.id while the query (what MercadoPago signs) names another.
    "signed_for_the_body_id_not_the_query_id": (
        401,
        lambda s, i: Attack(
            i, _payment_query(i), notification(i + "1"), {"x-signature": sign(s, i + "1")}
        ),
    ),
    "signed_for_another_id_with_no_query": (
        401,
        lambda s, i: Attack(i, None, notification(i), {"x-signature": sign(s, i + "1")}),
    ),
    # Signed correctly, but the body is not a notification at all: 400.
    "body_malformed_json": (
        400,
        lambda s, i: Attack(i, _payment_query(i), b'{"data": {"id": ', {"x-signature": sign(s, i)}),
    ),
    "body_json_array": (
        400,
        lambda s, i: Attack(i, _payment_query(i), b"[1, 2, 3]", {"x-signature": sign(s, i)}),
    ),
    "body_json_string": (
        400,
        lambda s, i: Attack(i, _payment_query(i), b'"payment"', {"x-signature": sign(s, i)}),
    ),
    "body_nested_thirty_thousand_deep": (
        400,
        lambda s, i: Attack(
            i, _payment_query(i), b"[" * 30_000 + b"]" * 30_000, {"x-signature": sign(s, i)}
        ),
    ),
    "body_with_nul_characters": (
        400,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i, action="payment.updated\u0000"),
            {"x-signature": sign(s, i)},
        ),
    ),
    "body_empty": (
        400,
        lambda s, i: Attack(i, _payment_query(i), b"", {"x-signature": sign(s, i)}),
    ),
    "body_binary_garbage": (
        400,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            bytes(range(256)) * 4,
            {"x-signature": sign(s, i)},
            content_type="application/octet-stream",
        ),
    ),
    # Far larger than any notification: 413 before the body is read.
    "body_oversized": (
        413,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i, padding="x" * 200_000),
            {"x-signature": sign(s, i)},
        ),
    ),
    "declared_length_oversized": (
        413,
        lambda s, i: Attack(
            i,
            _payment_query(i),
            notification(i),
            {"x-signature": sign(s, i)},
            environ={"CONTENT_LENGTH": str(64 * 1024 * 1024)},
        ),
    ),
}

# Signed, well-formed JSON, but naming no payment we can act on: 200 "ignored".
IGNORED: dict[str, Builder] = {
    "no_type_anywhere": lambda s, i: Attack(
        i, f"data.id={i}", notification(i, type=None), {"x-signature": sign(s, i)}
    ),
    "data_id_not_numeric": lambda s, i: Attack(
        "abc" + i,
        _payment_query("abc" + i),
        notification("abc" + i),
        {"x-signature": sign(s, "abc" + i)},
    ),
    "data_id_negative": lambda s, i: Attack(
        "-" + i, _payment_query("-" + i), notification("-" + i), {"x-signature": sign(s, "-" + i)}
    ),
    # Arabic-Indic digits: str.isdigit() says yes and int() reads them as a payment id.
    "data_id_non_ascii_digits": lambda s, i: Attack(
        "\u0661\u0662\u0663",
        "data.id=%D9%A1%D9%A2%D9%A3&type=payment",
        notification("\u0661\u0662\u0663"),
        {"x-signature": sign(s, "\u0661\u0662\u0663")},
    ),
    "data_id_beyond_bigint": lambda s, i: Attack(
        "9" * 25,
        _payment_query("9" * 25),
        notification("9" * 25),
        {"x-signature": sign(s, "9" * 25)},
    ),
    # No id in the query, so none in the manifest (the body's is never signed nor used).
    "data_id_in_body_as_an_object": lambda s, i: Attack(
        "{'id': 1}", "type=payment", notification({"id": 1}), {"x-signature": sign(s, None)}
    ),
}


def _rows(db: Session, data_id: str) -> tuple[int, int]:
    """(inbox rows naming data_id, recorded payments with that id)."""
    db.expire_all()
    inbox = db.execute(
        select(func.count()).select_from(PaymentEvent).where(PaymentEvent.data_id == data_id)
    ).scalar_one()
    payments = 0
    if data_id.isascii() and data_id.isdigit() and int(data_id) < 2**63:
        payments = db.execute(
            select(func.count())
            .select_from(MercadoPagoPayment)
            .where(MercadoPagoPayment.id == int(data_id))
        ).scalar_one()
    return int(inbox), int(payments)


def _fresh_id() -> str:
    return str(5_000_000_000_000 + secrets.randbelow(10**12))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_notifications_are_refused_and_store_nothing(client, settings, db, name):
    status, build = CORPUS[name]
    attack = build(settings.mercadopago_webhook_secret, _fresh_id())
    answer = attack.send(client)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["status"] == status
    assert _rows(db, attack.data_id) == (0, 0)


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_signed_notifications_naming_no_payment_are_ignored(client, settings, db, name):
    attack = IGNORED[name](settings.mercadopago_webhook_secret, _fresh_id())
    answer = attack.send(client)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"status": "ignored"}
    assert _rows(db, attack.data_id) == (0, 0)


@pytest.mark.usefixtures("worker", "mp_sandbox")
@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("notification_id_true", {"id": True}),
        ("notification_id_beyond_bigint", {"id": 10**30}),
        ("notification_id_a_string", {"id": "n-1"}),
        ("action_an_object", {"action": {"nested": ["x"] * 100}}),
    ],
)
def test_signed_notifications_with_odd_fields_are_stored_once_without_crashing(
    client, settings, db, name, changes
):
    """The payment id is valid, so the notification is kept (the provider's answer will
    decide); the odd fields must not turn into a 500 that MercadoPago would retry forever."""
    data_id = _fresh_id()
    attack = Attack(
        data_id,
        _payment_query(data_id),
        notification(data_id, **changes),
        {"x-signature": sign(settings.mercadopago_webhook_secret, data_id)},
    )
    try:
        first, again = attack.send(client), attack.send(client)
        assert (first.status_code, again.status_code) == (200, 200), first.get_data(as_text=True)
        assert first.get_json() == {"status": "accepted"}
        assert _rows(db, data_id)[0] == 1
    finally:
        # The payment exists nowhere, so the row would stay unprocessed for good and every
        # later inbox sweep of the run (tests/reliability/test_beat_twice.py) would take it.
        db.execute(delete(PaymentEvent).where(PaymentEvent.data_id == data_id))
        db.commit()
