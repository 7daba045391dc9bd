"""Buying credits end to end: real API, real worker, the MercadoPago sandbox, real webhooks."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from market.models import (
    Job,
    LedgerTransaction,
    Notification,
    PaymentEvent,
)
from tests.support.mercadopago import balance, buy, purchase_row, reconcile, wait_status
from tests.support.poll import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def count(app, model, *where) -> int:
    with app.extensions["spartan.sessions"]() as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def kinds(app, user_id) -> list[str]:
    with app.extensions["spartan.sessions"]() as session:
        return list(
            session.execute(
                select(Notification.kind)
                .where(Notification.user_id == user_id)
                .order_by(Notification.created_at)
            ).scalars()
        )


def processed(app, payment_id: int, n: int) -> bool:
    return (
        count(
            app,
            PaymentEvent,
            PaymentEvent.data_id == str(payment_id),
            PaymentEvent.processed_at.is_not(None),
        )
        >= n
    )


def test_approved_purchase_credits_once(app, client, alice, user_id_of, mp_sandbox):
    checkout = buy(client, alice, "credits-500")
    assert checkout["preference_id"] and checkout["init_point"]
    assert checkout["checkout_url"] == checkout["sandbox_init_point"]
    pref = mp_sandbox.app.extensions["mercadopago_sandbox"].preference(checkout["preference_id"])
    # Webhooks only: no legacy IPN copy of each notification.
    assert pref["notification_url"].endswith(
        "/api/v1/advanced/webhooks/mercadopago?source_news=webhooks"
    )
    assert pref["auto_return"] == "approved" and pref["expires"] is True
    row = purchase_row(app, checkout["purchase_id"])
    # The preference expires with the purchase, for cash and ticket payments too.
    expiry = row.expires_at.isoformat(timespec="milliseconds")
    assert pref["expiration_date_to"] == pref["date_of_expiration"] == expiry
    assert pref["items"][0]["unit_price"] == 45

    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_for(lambda: balance(client, alice) == 500, what="credits")
    row = purchase_row(app, checkout["purchase_id"])
    assert (row.status, row.payment_id) == ("approved", payment["id"])
    assert "credits.purchase_approved" in kinds(app, user_id_of(alice))
    history = client.get("/api/v1/profile/me/purchases", headers=alice)
    assert history.get_json()[0]["status"] == "approved"
    assert "X-Pagination" in history.headers
    txns = client.get("/api/v1/advanced/credits/transactions", headers=alice).get_json()
    assert [(t["kind"], t["amount"]) for t in txns] == [("sale", 500)]


def test_rejected_purchase_credits_nothing(app, client, alice, user_id_of, mp_sandbox):
    checkout = buy(client, alice)
    mp_sandbox.pay(checkout["preference_id"], status="rejected")
    wait_status(app, checkout["purchase_id"], "rejected")
    assert balance(client, alice) == 0
    wait_for(lambda: "payment.failed" in kinds(app, user_id_of(alice)), what="notification")


def test_ten_concurrent_copies_of_a_webhook_credit_once(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="duplicate", copies=10)
    wait_for(
        lambda: (
            len([w for w in mp_sandbox.webhooks(payment["id"]) if w["status_code"] == 200]) == 10
        ),
        what="10 deliveries answered 200",
    )
    wait_status(app, checkout["purchase_id"], "approved")
    wait_for(lambda: processed(app, payment["id"], 1), what="inbox processed")
    inbox = PaymentEvent.data_id == str(payment["id"])
    assert count(app, PaymentEvent, inbox) == 1
    assert balance(client, alice) == 100
    ref = f"mercadopago:payment:{payment['id']}"
    assert count(app, LedgerTransaction, LedgerTransaction.reference == ref) == 1


def test_late_pending_does_not_move_an_approved_purchase_back(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    mp_sandbox.control(f"/payments/{payment['id']}/status", {"status": "pending"})
    wait_for(lambda: processed(app, payment["id"], 2), what="second notification applied")
    assert purchase_row(app, checkout["purchase_id"]).status == "approved"
    assert balance(client, alice) == 100


def test_provider_down_then_back_still_settles(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    mp_sandbox.chaos(error_rate=1.0, error_status=503)
    try:
        payment = mp_sandbox.pay(checkout["preference_id"])
        # The webhook is stored; fetching the payment fails and is retried with backoff.
        wait_for(
            lambda: any(w["status_code"] == 200 for w in mp_sandbox.webhooks(payment["id"])),
            what="webhook accepted",
        )
        assert purchase_row(app, checkout["purchase_id"]).status == "pending"
    finally:
        mp_sandbox.chaos()
    wait_status(app, checkout["purchase_id"], "approved", timeout=40)
    assert balance(client, alice) == 100


def test_withheld_webhook_settles_by_reconciliation(app, client, alice, mp_sandbox):
    checkout = buy(client, alice, "credits-1000")
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    assert mp_sandbox.webhooks(payment["id"]) == []
    first = reconcile(app, checkout["purchase_id"])
    assert first["purchases"] == 1 and first["payments"] == 1
    # The settlement it started is queued or running, or done: either way, none again.
    second = reconcile(app, checkout["purchase_id"])
    assert first["settled"] >= 1 and second["settled"] == 0
    wait_status(app, checkout["purchase_id"], "approved")
    assert balance(client, alice) == 1000
    assert reconcile(app)["settled"] == 0
    # The settlement was a job of the buyer's, with its steps (no inline settling).
    with app.extensions["spartan.sessions"]() as session:
        job = session.execute(
            select(Job).where(Job.subject == f"mercadopago-payment:{payment['id']}")
        ).scalar_one()
        assert job.owner_id == purchase_row(app, checkout["purchase_id"]).user_id
        # No refund is due, so no refund step; the notification went out after apply's commit.
        assert [s.name for s in job.steps] == ["apply_payment"]


def test_second_payment_of_a_paid_purchase_is_refunded(app, client, alice, user_id_of, mp_sandbox):
    checkout = buy(client, alice)
    first = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    second = mp_sandbox.pay(checkout["preference_id"])
    wait_for(lambda: mp_sandbox.payment(second["id"])["status"] == "refunded", what="refund")
    assert mp_sandbox.payment(first["id"])["status"] == "approved"
    wait_for(lambda: "refund.issued" in kinds(app, user_id_of(alice)), what="notification")
    assert balance(client, alice) == 100


def test_payment_after_expiry_is_refunded(app, client, alice, mp_sandbox):
    from market.models import Purchase
    from market.models.base import utcnow
    from workflows.sweeps import expire_purchases

    checkout = buy(client, alice)
    with app.extensions["spartan.sessions"]() as session:
        row = session.get(Purchase, uuid.UUID(checkout["purchase_id"]))
        row.expires_at = utcnow()
        session.commit()
    assert expire_purchases()["expired"] >= 1
    assert expire_purchases()["expired"] == 0
    assert purchase_row(app, checkout["purchase_id"]).status == "expired"
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_for(lambda: mp_sandbox.payment(payment["id"])["status"] == "refunded", what="refund")
    assert purchase_row(app, checkout["purchase_id"]).status == "expired"
    assert balance(client, alice) == 0


def test_admin_refund_reverses_credits(app, client, alice, admin, user_id_of, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    assert balance(client, alice) == 100
    url = f"/api/v1/advanced/credits/purchases/{checkout['purchase_id']}/refund"
    assert client.post(url, headers=alice).status_code == 403
    answer = client.post(url, headers=admin)
    assert answer.status_code == 202, answer.get_json()
    assert balance(client, alice) == 0
    wait_status(app, checkout["purchase_id"], "refunded")
    assert mp_sandbox.payment(payment["id"])["status"] == "refunded"
    # The provider's own refund notification arrives afterwards and reverses nothing more.
    wait_for(lambda: processed(app, payment["id"], 2), what="refund notification applied")
    assert balance(client, alice) == 0
    assert "refund.issued" in kinds(app, user_id_of(alice))
    assert client.post(url, headers=admin).status_code == 409


def test_refund_refused_once_credits_are_spent(app, client, alice, admin, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    spent = client.post("/api/v1/advanced/credits/spend", json={"amount": 1}, headers=alice)
    assert spent.status_code == 201
    url = f"/api/v1/advanced/credits/purchases/{checkout['purchase_id']}/refund"
    answer = client.post(url, headers=admin)
    assert answer.status_code == 409, answer.get_json()
    assert mp_sandbox.payment(payment["id"])["status"] == "approved"
    assert mp_sandbox.payment(payment["id"])["refunds"] == []
    assert balance(client, alice) == 99


def test_chargeback_takes_back_what_is_left(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    client.post("/api/v1/advanced/credits/spend", json={"amount": 30}, headers=alice)
    mp_sandbox.control(f"/payments/{payment['id']}/chargeback")
    row = wait_status(app, checkout["purchase_id"], "charged_back")
    assert row.unrecovered_credits == 30
    assert balance(client, alice) == 0


def test_webhook_to_credit_latency(app, client, make_user, mp_sandbox, capsys):
    import statistics

    from market.models import Purchase

    buyers = [make_user() for _ in range(50)]
    checkouts = [buy(client, headers) for headers in buyers]
    latencies = []
    for checkout in checkouts:
        payment = mp_sandbox.pay(checkout["preference_id"])
        row = wait_status(app, checkout["purchase_id"], "approved")
        with app.extensions["spartan.sessions"]() as session:
            received = session.execute(
                select(func.min(PaymentEvent.received_at)).where(
                    PaymentEvent.data_id == str(payment["id"])
                )
            ).scalar_one()
            assert session.get(Purchase, row.id).approved_at is not None
        latencies.append((row.approved_at - received).total_seconds() * 1000)
    median = statistics.median(latencies)
    with capsys.disabled():
        print(
            f"\nwebhook received -> credited, {len(latencies)} purchases: median {median:.0f} ms, "
            f"p90 {statistics.quantiles(latencies, n=10)[-1]:.0f} ms, max {max(latencies):.0f} ms"
        )
    assert median < 2000


def test_admin_refund_honours_idempotency_key(app, client, alice, admin, mp_sandbox):
    """Same key, same purchase: the same 202 again and one refund; the key on another
    purchase: 422, nothing refunded."""
    first, second = buy(client, alice), buy(client, alice)
    for checkout in (first, second):
        mp_sandbox.pay(checkout["preference_id"])
        wait_status(app, checkout["purchase_id"], "approved")
    url = "/api/v1/advanced/credits/purchases/{}/refund"
    key = {"Idempotency-Key": f"refund-{uuid.uuid4()}"}
    answer = client.post(url.format(first["purchase_id"]), headers={**admin, **key})
    assert answer.status_code == 202, answer.get_json()
    again = client.post(url.format(first["purchase_id"]), headers={**admin, **key})
    assert again.status_code == 202, again.get_json()
    assert again.get_json() == answer.get_json()
    assert again.headers["Location"] == answer.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(url.format(second["purchase_id"]), headers={**admin, **key})
    assert other.status_code == 422
    assert other.get_json()["type"].endswith("/idempotency-key-reused")
    wait_status(app, first["purchase_id"], "refunded")
    assert purchase_row(app, second["purchase_id"]).status == "approved"
    assert balance(client, alice) == 100
