"""MercadoPago as it really behaves (issue 13), end to end: the real API and worker, the
sandbox playing MercadoPago through its control API, and the sweeps as beat runs them.

Each test names the behaviour it covers; RELIABILITY.md lists them.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import func, select

from market.models import LedgerTransaction, Notification, PaymentEvent, PaymentRefund
from market.models.base import utcnow
from market.payments import reconciliation
from tests.support.mercadopago import (
    balance,
    buy,
    purchase_row,
    reconcile,
    wait_balance,
    wait_status,
)
from tests.support.poll import wait_for

pytestmark = pytest.mark.usefixtures("worker")


def movements(app, purchase_id: str) -> list[tuple[str, int]]:
    with app.extensions["spartan.sessions"]() as session:
        rows = session.execute(
            select(LedgerTransaction.kind, LedgerTransaction.user_delta)
            .where(LedgerTransaction.purchase_id == uuid.UUID(purchase_id))
            .order_by(LedgerTransaction.created_at)
        ).all()
    return [(r.kind, r.user_delta) for r in rows]


def paid(app, client, headers, mp_sandbox, package: str = "credits-100") -> tuple[dict, dict]:
    checkout = buy(client, headers, package)
    payment = mp_sandbox.pay(checkout["preference_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    return checkout, payment


def repeat_the_news(app, mp_sandbox, payment: dict) -> None:
    """MercadoPago's latest news of the payment once more, by webhook and by the sweep; back
    once every event of the payment is processed."""
    mp_sandbox.control(f"/payments/{payment['id']}/notify")
    reconcile(app)
    wait_for(lambda: _all_processed(app, payment["id"]), what="the repeat applied")


def test_a_panel_refund_whose_webhook_is_lost_is_reversed_by_the_sweep(
    app, client, alice, mp_sandbox
):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    mp_sandbox.control(f"/payments/{payment['id']}/refund", {"webhook": "withhold"})
    assert purchase_row(app, checkout["purchase_id"]).status == "approved"
    assert reconcile(app)["changed"] >= 1
    # The cursor is a row: the next run (or a restarted beat) starts from there.
    with app.extensions["spartan.sessions"]() as session:
        cursor = reconciliation.position(session)
    assert cursor is not None and cursor >= utcnow() - timedelta(minutes=1)
    wait_status(app, checkout["purchase_id"], "refunded")
    assert balance(client, alice) == 0
    reconcile(app)
    assert movements(app, checkout["purchase_id"]) == [("sale", 100), ("refund", -100)]


def test_a_chargeback_whose_webhooks_are_lost_is_reversed_by_the_sweep(
    app, client, alice, mp_sandbox
):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    mp_sandbox.control(f"/payments/{payment['id']}/chargeback", {"webhook": "withhold"})
    reconcile(app)
    wait_status(app, checkout["purchase_id"], "charged_back")
    assert balance(client, alice) == 0


def test_a_reimbursed_chargeback_restores_the_credits_once(app, client, alice, mp_sandbox):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    client.post("/api/v1/advanced/credits/spend", json={"amount": 30}, headers=alice)
    mp_sandbox.control(f"/payments/{payment['id']}/chargeback", {"status_detail": "in_process"})
    row = wait_status(app, checkout["purchase_id"], "charged_back")
    assert (row.unrecovered_credits, balance(client, alice)) == (30, 0)
    mp_sandbox.control(f"/payments/{payment['id']}/chargeback", {"status_detail": "reimbursed"})
    row = wait_status(app, checkout["purchase_id"], "approved")
    assert (row.status_detail, row.unrecovered_credits) == ("reimbursed", 0)
    # The seller won: what the chargeback took (70) comes back; the 30 spent stay spent.
    wait_balance(client, alice, 70)
    # The same news again, by webhook and by the sweep, gives nothing more.
    repeat_the_news(app, mp_sandbox, payment)
    assert balance(client, alice) == 70
    assert movements(app, checkout["purchase_id"]) == [
        ("sale", 100),
        ("chargeback", -70),
        ("refund_void", 70),
    ]


def test_a_dispute_reopened_after_the_seller_won_takes_the_credits_again_once(
    app, client, alice, user_id_of, mp_sandbox
):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    chargeback = f"/payments/{payment['id']}/chargeback"
    for _ in range(2):
        # The issuer wins (the money is gone), then the seller wins it back; the second time
        # the issuer reopens the same dispute (arbitration).
        mp_sandbox.control(chargeback, {"status_detail": "settled"})
        wait_status(app, checkout["purchase_id"], "charged_back")
        wait_balance(client, alice, 0)
        mp_sandbox.control(chargeback, {"status_detail": "reimbursed"})
        wait_status(app, checkout["purchase_id"], "approved")
        wait_balance(client, alice, 100)
    # The same news again, by webhook and by the sweep, moves nothing more.
    repeat_the_news(app, mp_sandbox, payment)
    assert balance(client, alice) == 100
    assert movements(app, checkout["purchase_id"]) == [
        ("sale", 100),
        *[("chargeback", -100), ("refund_void", 100)] * 2,
    ]
    with app.extensions["spartan.sessions"]() as session:
        titles = session.execute(
            select(Notification.title)
            .where(Notification.user_id == user_id_of(alice), Notification.kind == "refund.issued")
            .order_by(Notification.created_at)
        ).scalars()
        assert list(titles) == ["Your payment was charged back", "Dispute won"] * 2


def test_partial_panel_refunds_take_back_their_share_rounded_for_the_buyer(
    app, client, alice, mp_sandbox
):
    checkout, payment = paid(app, client, alice, mp_sandbox)  # 100 credits for 10.00 ARS
    mp_sandbox.control(f"/payments/{payment['id']}/refund", {"amount": 2.57})
    row = wait_status(app, checkout["purchase_id"], "partially_refunded")
    # 100 x 2.57 / 10.00 = 25.7 credits: 25 taken, the fraction stays with the buyer.
    assert (row.refunded_credits, balance(client, alice)) == (25, 75)
    mp_sandbox.control(f"/payments/{payment['id']}/refund", {"amount": 7.43})
    wait_status(app, checkout["purchase_id"], "refunded")
    wait_balance(client, alice, 0)
    assert [m for m in movements(app, checkout["purchase_id"]) if m[0] == "refund"] == [
        ("refund", -25),
        ("refund", -75),
    ]


def test_a_retry_signed_twenty_minutes_ago_is_accepted_and_settles(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    payment = mp_sandbox.pay(checkout["preference_id"], webhook="withhold")
    old_ts = str(int(time.time() * 1000) - 20 * 60 * 1000)
    entry = mp_sandbox.control(f"/payments/{payment['id']}/notify", {"ts": old_ts}).json()
    assert entry["status_code"] == 200, entry
    wait_status(app, checkout["purchase_id"], "approved")
    assert balance(client, alice) == 100


def test_ipn_copies_and_merchant_orders_settle_and_never_get_401(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    # A notification_url without source_news (as one set in the panel): IPN copies come too.
    preference = mp_sandbox.app.extensions["mercadopago_sandbox"].preferences[
        checkout["preference_id"]
    ]
    preference["notification_url"] = _without_source_news(preference["notification_url"])
    payment = mp_sandbox.pay(checkout["preference_id"])

    def every_form_answered() -> list[dict] | None:
        log = mp_sandbox.webhooks(payment["id"], form=None)
        topics = {(e["form"], e["topic"]) for e in log if e["status_code"] == 200}
        wanted = {("webhook", "payment"), ("ipn", "payment"), ("ipn", "merchant_order")}
        return log if wanted <= topics else None

    log = wait_for(every_form_answered, what="webhook, IPN and merchant_order answered")
    assert {e["status_code"] for e in log} == {200}
    wait_status(app, checkout["purchase_id"], "approved")
    wait_for(lambda: _all_processed(app, payment["id"]), what="every event processed")
    assert movements(app, checkout["purchase_id"]) == [("sale", 100)]


def test_the_chargeback_topic_alone_settles_the_payment(app, client, alice, mp_sandbox):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    mp_sandbox.control(f"/payments/{payment['id']}/chargeback", {"payment_update": False})
    wait_status(app, checkout["purchase_id"], "charged_back")
    log = mp_sandbox.webhooks(payment["id"], form=None)
    assert {e["status_code"] for e in log if e["topic"] == "topic_chargebacks_wh"} == {200}
    assert balance(client, alice) == 0


def test_a_replay_with_a_new_body_id_is_a_duplicate(app, client, alice, mp_sandbox):
    _, payment = paid(app, client, alice, mp_sandbox)
    first = mp_sandbox.webhooks(payment["id"])[0]
    replay = {**first["body"], "id": first["body"]["id"] + 1, "action": "payment.updated"}
    answer = requests.post(
        first["url"],
        json=replay,
        headers={k: v for k, v in first["headers"].items() if k.startswith("x-")},
        timeout=10,
    )
    assert (answer.status_code, answer.json()) == (200, {"status": "duplicate"})
    with app.extensions["spartan.sessions"]() as session:
        events = session.execute(
            select(func.count())
            .select_from(PaymentEvent)
            .where(PaymentEvent.payment_id == payment["id"])
        ).scalar_one()
    assert events == 1


def test_test_credentials_notify_nothing_and_the_sweep_settles(app, client, alice, mp_sandbox):
    checkout = buy(client, alice)
    mp_sandbox.settings(notify=False)
    try:
        payment = mp_sandbox.pay(checkout["preference_id"])
    finally:
        mp_sandbox.settings(notify=True)
    assert mp_sandbox.webhooks(payment["id"], form=None) == []
    reconcile(app, checkout["purchase_id"])
    wait_status(app, checkout["purchase_id"], "approved")
    assert balance(client, alice) == 100


@pytest.mark.parametrize(
    ("final", "status", "credits"), [("approved", "refunded", 0), ("rejected", "approved", 100)]
)
def test_a_refund_is_final_only_when_its_own_status_says_so(
    app, client, alice, admin, mp_sandbox, final, status, credits
):
    checkout, payment = paid(app, client, alice, mp_sandbox)
    mp_sandbox.settings(refund_status="in_process")
    try:
        url = f"/api/v1/advanced/credits/purchases/{checkout['purchase_id']}/refund"
        assert client.post(url, headers=admin).status_code == 202
        wait_for(lambda: _refund(app, payment["id"]) == "in_process", what="refund in process")
    finally:
        mp_sandbox.settings(refund_status="approved")
    # Taken when asked for; the purchase waits for MercadoPago's word.
    assert purchase_row(app, checkout["purchase_id"]).status == "approved"
    assert balance(client, alice) == 0
    refund_id = mp_sandbox.payment(payment["id"])["refunds"][0]["id"]
    mp_sandbox.control(f"/refunds/{refund_id}/status", {"status": final})
    wait_for(
        lambda: _refund(app, payment["id"]) == ("succeeded" if final == "approved" else "failed"),
        what=f"refund {final}",
    )
    wait_status(app, checkout["purchase_id"], status)
    wait_balance(client, alice, credits)


def test_a_buyer_follows_a_purchase_from_buy_to_credited(
    app, client, alice, bob, admin, mp_sandbox
):
    answer = client.post(
        "/api/v1/advanced/credits/buy", json={"package_id": "credits-500"}, headers=alice
    )
    assert answer.status_code == 202
    url = answer.get_json()["purchase_url"]
    assert url.endswith(f"/credits/purchases/{answer.get_json()['purchase_id']}")
    pending = wait_for(
        lambda: (b := client.get(url, headers=alice).get_json()).get("checkout_url") and b,
        what="the checkout link",
    )
    assert (pending["status"], pending["credited"], pending["credits"]) == ("pending", False, 500)
    assert (pending["amount"], pending["currency"]) == ("45.00", "ARS")
    assert client.get(url, headers=bob).status_code == 404
    assert client.get(url).status_code == 401
    etag = client.get(url, headers=alice).headers["ETag"]
    assert client.get(url, headers={**alice, "If-None-Match": etag}).status_code == 304

    preference = mp_sandbox.app.extensions["mercadopago_sandbox"].preferences[
        _preference_id(app, answer.get_json()["purchase_id"])
    ]
    payment = mp_sandbox.pay(preference["id"])
    done = wait_for(
        lambda: (b := client.get(url, headers=alice).get_json())["credited"] and b,
        what="credited",
    )
    assert done["status"] == "approved" and done["checkout_url"] is None
    assert [(p["id"], p["status"]) for p in done["payments"]] == [(str(payment["id"]), "approved")]
    assert [(t["from"], t["to"]) for t in done["timeline"]] == [
        (None, "pending"),
        ("pending", "approved"),
    ]
    assert done["timeline"][1]["payment_id"] == str(payment["id"])
    assert client.get(url, headers={**alice, "If-None-Match": etag}).status_code == 200
    assert client.get(url, headers=admin).status_code == 200
    # The settlement job is the buyer's: it shows in their task list's history.
    tasks = client.get(
        f"/api/v1/advanced/tasks/{_settlement_job(app, payment['id'])}", headers=alice
    )
    assert tasks.status_code == 200 and tasks.get_json()["kind"] == "credits.settlement"

    # The checkout's back URL lands on our page, which shows the state and no id.
    back = urlsplit(preference["back_urls"]["success"])
    page = client.get(f"{back.path}?{back.query}&payment_id={payment['id']}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert "500 credits: approved" in text
    assert answer.get_json()["purchase_id"] not in text and str(payment["id"]) not in text
    assert page.headers["Cache-Control"] == "no-store"
    assert client.get("/checkout/purchases/sm-not-a-reference").status_code == 404


# Helpers ------------------------------------------------------------------------------------


def _without_source_news(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "source_news"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _all_processed(app, payment_id: int) -> bool:
    with app.extensions["spartan.sessions"]() as session:
        return (
            session.execute(
                select(func.count())
                .select_from(PaymentEvent)
                .where(PaymentEvent.payment_id == payment_id, PaymentEvent.processed_at.is_(None))
            ).scalar_one()
            == 0
        )


def _refund(app, payment_id: int) -> str | None:
    with app.extensions["spartan.sessions"]() as session:
        return session.execute(
            select(PaymentRefund.status).where(PaymentRefund.payment_id == payment_id)
        ).scalar_one_or_none()


def _preference_id(app, purchase_id: str) -> str:
    return wait_for(lambda: purchase_row(app, purchase_id).preference_id, what="preference")


def _settlement_job(app, payment_id: int) -> str:
    from market.models import Job

    with app.extensions["spartan.sessions"]() as session:
        return str(
            session.execute(
                select(Job.id)
                .where(Job.subject == f"mercadopago-payment:{payment_id}")
                .order_by(Job.created_at)
                .limit(1)
            ).scalar_one()
        )
