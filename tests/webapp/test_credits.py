"""Credits API: packages, spending (concurrent, idempotent), history, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from market import ledger
from market.models import IdempotencyKey, PaymentEvent, Purchase

BASE = "/api/v1/advanced/credits"
WEBHOOK = "/api/v1/advanced/webhooks/mercadopago"


def fund(app, user_id, credits: int) -> None:
    with app.extensions["spartan.sessions"]() as session:
        ledger.credit_sale(session, user_id=user_id, credits=credits, reference=f"t:{uuid.uuid4()}")
        session.commit()


def signed(secret: str, data_id: str, request_id: str, ts: int | None = None) -> dict[str, str]:
    ts = ts if ts is not None else int(time.time() * 1000)
    manifest = f"id:{data_id};request-id:{request_id};ts:{ts};"
    digest = hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return {"x-signature": f"ts={ts},v1={digest}", "x-request-id": request_id}


def notification(data_id: str, notification_id: int | None = None) -> dict:
    return {
        "action": "payment.updated",
        "api_version": "v1",
        "data": {"id": data_id},
        "id": notification_id or int(time.time() * 1000),
        "live_mode": False,
        "type": "payment",
    }


def inbox_rows(db, data_id: str) -> int:
    return db.execute(
        select(func.count()).select_from(PaymentEvent).where(PaymentEvent.data_id == data_id)
    ).scalar_one()


def test_packages_are_the_four_seeded(client):
    answer = client.get(f"{BASE}/packages")
    assert answer.status_code == 200
    assert answer.get_json() == [
        {"id": "credits-100", "credits": 100, "price": "10.00", "currency": "ARS"},
        {"id": "credits-500", "credits": 500, "price": "45.00", "currency": "ARS"},
        {"id": "credits-1000", "credits": 1000, "price": "80.00", "currency": "ARS"},
        {"id": "credits-2000", "credits": 2000, "price": "150.00", "currency": "ARS"},
    ]


def test_buy_needs_a_known_package_and_a_user(client, alice):
    assert client.post(f"{BASE}/buy", json={"package_id": "credits-100"}).status_code == 401
    assert client.post(f"{BASE}/buy", json={"package_id": "nope"}, headers=alice).status_code == 422
    assert client.post(f"{BASE}/buy", json={}, headers=alice).status_code == 422


def test_spend_debits_at_once_or_409(app, client, alice, user_id_of):
    fund(app, user_id_of(alice), 10)
    answer = client.post(f"{BASE}/spend", json={"amount": 4, "description": "x"}, headers=alice)
    assert answer.status_code == 201
    assert answer.get_json()["balance"] == 6 and answer.get_json()["transaction_id"]
    refused = client.post(f"{BASE}/spend", json={"amount": 7}, headers=alice)
    assert refused.status_code == 409
    assert refused.get_json()["type"].endswith("insufficient-credits")
    assert client.post(f"{BASE}/spend", json={"amount": 0}, headers=alice).status_code == 422
    assert client.post(f"{BASE}/spend", json={"amount": "3"}, headers=alice).status_code == 422
    me = client.get(f"{BASE}/me", headers=alice).get_json()
    assert me["balance"] == 6
    assert [(t["kind"], t["amount"]) for t in me["recent"]] == [("spend", -4), ("sale", 10)]


def test_fifty_concurrent_spends_never_overdraw(app_with, user_id_of, make_user, db):
    other = app_with(rate_limit_spend="1000/minute", rate_limit_default="1000/minute")
    headers = make_user()
    user_id = user_id_of(headers)
    fund(other, user_id, 20)

    def spend(_: int) -> int:
        return (
            other.test_client()
            .post(f"{BASE}/spend", json={"amount": 3}, headers=headers)
            .status_code
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(spend, range(50)))
    assert codes.count(201) == 6 and codes.count(409) == 44
    assert ledger.balance(db, user_id) == 2
    report = ledger.check_parity(db)
    assert report["drift"] == report["unbalanced_transactions"] == report["grand_total"] == 0


def test_spend_idempotency_key_replays_and_refuses_other_bodies(
    app, client, alice, bob, user_id_of
):
    fund(app, user_id_of(alice), 10)
    fund(app, user_id_of(bob), 10)
    key = {"Idempotency-Key": "spend-1"}
    first = client.post(f"{BASE}/spend", json={"amount": 3}, headers={**alice, **key})
    again = client.post(f"{BASE}/spend", json={"amount": 3}, headers={**alice, **key})
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(f"{BASE}/spend", json={"amount": 4}, headers={**alice, **key})
    assert other.status_code == 422
    # Keys are scoped per user: bob's "spend-1" is his own.
    mine = client.post(f"{BASE}/spend", json={"amount": 3}, headers={**bob, **key})
    assert mine.status_code == 201 and mine.get_json() != first.get_json()
    assert client.get(f"{BASE}/me", headers=alice).get_json()["balance"] == 7


def test_concurrent_replays_of_one_key_spend_once(app_with, make_user, user_id_of, db):
    other = app_with(rate_limit_spend="1000/minute", rate_limit_default="1000/minute")
    headers = {**make_user(), "Idempotency-Key": "same"}
    user_id = user_id_of(headers)
    fund(other, user_id, 10)

    def spend(_: int):
        return other.test_client().post(f"{BASE}/spend", json={"amount": 1}, headers=headers)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(spend, range(10)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.get_json()["transaction_id"] for a in answers}) == 1
    assert ledger.balance(db, user_id) == 9


def test_buy_idempotency_key_replays(client, alice, db, user_id_of):
    key = {**alice, "Idempotency-Key": "buy-1"}
    first = client.post(f"{BASE}/buy", json={"package_id": "credits-100"}, headers=key)
    again = client.post(f"{BASE}/buy", json={"package_id": "credits-100"}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    other = client.post(f"{BASE}/buy", json={"package_id": "credits-500"}, headers=key)
    assert other.status_code == 422
    count = db.execute(
        select(func.count()).select_from(Purchase).where(Purchase.user_id == user_id_of(alice))
    ).scalar_one()
    assert count == 1
    assert db.get(IdempotencyKey, (user_id_of(alice), "buy-1")).scope == "credits.buy"


def test_transactions_are_paginated(app, client, alice, user_id_of):
    fund(app, user_id_of(alice), 10)
    for _ in range(3):
        client.post(f"{BASE}/spend", json={"amount": 1}, headers=alice)
    page = client.get(f"{BASE}/transactions?page=1&page_size=2", headers=alice)
    assert page.status_code == 200 and len(page.get_json()) == 2
    assert '"total": 4' in page.headers["X-Pagination"]
    assert client.get(f"{BASE}/transactions").status_code == 401


def test_webhook_with_bad_signatures_is_refused_and_stores_nothing(client, settings, db):
    secret = settings.mercadopago_webhook_secret
    body = notification("777000111")
    url = f"{WEBHOOK}?data.id=777000111&type=payment"
    forged = signed("not-the-secret", "777000111", "req-1")
    future = signed(secret, "777000111", "req-2", ts=int(time.time() * 1000) + 3600_000)
    other_id = signed(secret, "777000112", "req-3")
    for headers in ({}, forged, future, other_id, {"x-signature": "garbage"}):
        answer = client.post(url, json=body, headers=headers)
        assert answer.status_code == 401, headers
    assert inbox_rows(db, "777000111") == 0


def test_webhook_replays_collapse_on_the_signed_parts(client, settings, db):
    secret = settings.mercadopago_webhook_secret
    data_id = str(888000000 + int(time.time()) % 100000)
    url = f"{WEBHOOK}?data.id={data_id}&type=payment"
    headers = signed(secret, data_id, "a")
    # A retry keeps its ts and request id; a replay may change any unsigned body field.
    answers = [
        client.post(url, json=notification(data_id, notification_id=n), headers=headers)
        for n in (1, 2, 3)
    ]
    assert [a.get_json()["status"] for a in answers] == ["accepted", "duplicate", "duplicate"]
    assert inbox_rows(db, data_id) == 1
    # Another notification of the same payment (its own request id and ts) is its own event.
    again = client.post(url, json=notification(data_id), headers=signed(secret, data_id, "b"))
    assert again.get_json()["status"] == "accepted" and inbox_rows(db, data_id) == 2


def test_a_correctly_signed_notification_is_accepted_however_old(client, settings, db):
    secret = settings.mercadopago_webhook_secret
    data_id = str(889000000 + int(time.time()) % 100000)
    twenty_minutes_ago = int(time.time() * 1000) - 20 * 60 * 1000
    answer = client.post(
        f"{WEBHOOK}?data.id={data_id}&type=payment",
        json=notification(data_id),
        headers=signed(secret, data_id, "late", ts=twenty_minutes_ago),
    )
    assert answer.status_code == 200 and answer.get_json()["status"] == "accepted"
    row = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == data_id)).scalar_one()
    assert (row.received_at - row.signed_at).total_seconds() >= 20 * 60


def test_unknown_topics_are_recorded_and_answered_200(client, settings, db):
    secret = settings.mercadopago_webhook_secret
    data_id = str(890000000 + int(time.time()) % 100000)
    answer = client.post(
        f"{WEBHOOK}?data.id={data_id}&type=subscription_preapproval",
        json={**notification(data_id), "type": "subscription_preapproval"},
        headers=signed(secret, data_id, "u"),
    )
    assert answer.status_code == 200 and answer.get_json() == {"status": "ignored"}
    row = db.execute(select(PaymentEvent).where(PaymentEvent.data_id == data_id)).scalar_one()
    assert row.type == "subscription_preapproval"
    assert row.processed_at is not None and row.job_id is None


def test_a_cached_balance_is_read_without_touching_the_database(app, client, alice, user_id_of):
    from sqlalchemy import event

    fund(app, user_id_of(alice), 70)
    first = client.get(f"{BASE}/me", headers=alice)
    assert first.status_code == 200 and first.json["balance"] == 70

    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    engine = app.extensions["spartan.engine"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        again = client.get(f"{BASE}/me", headers=alice)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert again.status_code == 200 and again.json == first.json
    assert statements == []
    # A change still shows at once: the spend drops the cached balance.
    assert client.post(f"{BASE}/spend", json={"amount": 20}, headers=alice).status_code == 201
    assert client.get(f"{BASE}/me", headers=alice).json["balance"] == 50
