"""Which notifications the sandbox sends, in which form, and how they are signed and retried:
read by a loopback receiver and checked with the SDK's own signature validator."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
import requests
from mercadopago.webhook.validator import InvalidWebhookSignatureError

from market.errors import ProviderError
from market.payments.mercadopago.client import MercadoPagoGateway
from tests.sandbox.helpers import (
    TOKEN,
    Receiver,
    Sandbox,
    assert_signed,
    paid,
    preference_body,
    verify,
    webhooks_only,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_ipn_copies_accompany_webhooks_without_source_news(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    pref = gateway.create_preference(
        preference_body(notification_url=receiver.url), idempotency_key="p1"
    )
    payment = paid(sandbox, pref["id"])
    order_id = payment["order"]["id"]

    hits = receiver.wait(3)
    (webhook,) = [h for h in hits if h.form == "webhook"]
    assert_signed(webhook, payment["id"])
    ipns = {h.query["topic"][0]: h for h in hits if h.form == "ipn"}
    assert set(ipns) == {"payment", "merchant_order"}

    ipn = ipns["payment"]
    assert ipn.query == {"id": [str(payment["id"])], "topic": ["payment"]}
    assert ipn.body == {
        "resource": f"{sandbox.url}/v1/payments/{payment['id']}",
        "topic": "payment",
    }
    # Signed with no id part: its query has no data.id.
    verify(ipn, None)
    with pytest.raises(InvalidWebhookSignatureError):
        verify(ipn, str(payment["id"]))
    assert ipn.headers["x-request-id"] != webhook.headers["x-request-id"]
    fetched = requests.get(ipn.body["resource"], headers=AUTH, timeout=5).json()
    assert fetched["id"] == payment["id"]

    order = ipns["merchant_order"]
    assert order.query == {"id": [str(order_id)], "topic": ["merchant_order"]}
    assert order.body == {
        "resource": f"{sandbox.url}/merchant_orders/{order_id}",
        "topic": "merchant_order",
    }
    verify(order, None)
    fetched = requests.get(order.body["resource"], headers=AUTH, timeout=5).json()
    assert [p["id"] for p in fetched["payments"]] == [payment["id"]]

    # A later change: webhook and payment IPN again; the order's IPN went once per payment.
    sandbox.control(f"/payments/{payment['id']}/status", {"status": "approved"})
    later = receiver.wait(5)[3:]
    assert sorted((h.form, h.query.get("topic", h.query.get("type"))[0]) for h in later) == [
        ("ipn", "payment"),
        ("webhook", "payment"),
    ]
    other = paid(sandbox, pref["id"], status="rejected")
    hits = receiver.wait(8)
    order_ipns = [h for h in hits if h.query.get("topic") == ["merchant_order"]]
    assert len(order_ipns) == 2 and all(h.query["id"] == [str(order_id)] for h in order_ipns)
    log = sandbox.deliveries(payment_id=other["id"], form="ipn")
    assert {d["topic"] for d in log} == {"payment", "merchant_order"}


def test_source_news_chooses_the_form(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    only_webhooks = gateway.create_preference(
        preference_body("a", notification_url=webhooks_only(receiver.url)), idempotency_key="a"
    )
    only_ipn = gateway.create_preference(
        preference_body("b", notification_url=f"{receiver.url}?source_news=ipn"),
        idempotency_key="b",
    )
    first = paid(sandbox, only_webhooks["id"])
    (hit,) = receiver.wait(1)
    assert hit.form == "webhook" and hit.query["source_news"] == ["webhooks"]
    assert_signed(hit, first["id"])
    second = paid(sandbox, only_ipn["id"])
    hits = receiver.wait(3)[1:]
    assert {h.form for h in hits} == {"ipn"}
    assert {h.query["topic"][0] for h in hits} == {"payment", "merchant_order"}
    # Every delivery is logged, and only these were sent.
    assert [d["form"] for d in sandbox.deliveries(payment_id=first["id"])] == ["webhook"]
    assert {d["form"] for d in sandbox.deliveries(payment_id=second["id"])} == {"ipn"}
    assert len(receiver.hits) == 3


def test_chargeback_topic_and_resource(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]

    opened = sandbox.control(f"/payments/{payment_id}/chargeback", {"status_detail": "in_process"})
    assert (opened.json()["status"], opened.json()["status_detail"]) == (
        "charged_back",
        "in_process",
    )
    hits = receiver.wait(2)
    (created,) = [h for h in hits if h.body["type"] == "topic_chargebacks_wh"]
    chargeback_id = created.body["data"]["id"]
    assert created.query["data.id"] == [chargeback_id]
    assert created.query["type"] == ["topic_chargebacks_wh"]
    assert created.body["action"] == "chargeback.created"
    assert created.body["data"] == {"id": chargeback_id, "payment_id": payment_id}
    verify(created, chargeback_id)  # signed over the chargeback's id
    assert [h.body["action"] for h in hits if h.body["type"] == "payment"] == ["payment.updated"]

    sdk = sandbox.sdk()
    found = sdk.chargeback().get(chargeback_id)
    assert found["status"] == 200
    chargeback = found["response"]
    assert chargeback["id"] == chargeback_id and chargeback["payments"] == [payment_id]
    assert chargeback["amount"] == 300.5 and chargeback["currency"] == "ARS"
    assert chargeback["coverage_applied"] is False
    assert chargeback["date_created"] == chargeback["date_last_updated"]
    listed = sdk.chargeback().search({"payment_id": payment_id})["response"]["results"]
    assert [c["id"] for c in listed] == [chargeback_id]

    # The same chargeback moves on; the payment's own notification can be left out.
    moved = sandbox.control(
        f"/payments/{payment_id}/chargeback",
        {"status_detail": "reimbursed", "payment_update": False},
    )
    assert moved.json()["status_detail"] == "reimbursed"
    updated = receiver.wait(3)[2]
    assert updated.body["action"] == "chargeback.updated"
    assert updated.body["data"] == {"id": chargeback_id, "payment_id": payment_id}
    assert gateway.get_payment(payment_id)["status_detail"] == "reimbursed"
    assert sdk.chargeback().get(chargeback_id)["response"]["payments"] == [payment_id]
    again = sandbox.control(f"/payments/{payment_id}/chargeback", {"status_detail": "reimbursed"})
    assert again.status_code == 400
    bad = sandbox.control(f"/payments/{payment_id}/chargeback", {"status_detail": "won"})
    assert bad.status_code == 400
    assert sdk.chargeback().get("404")["status"] == 404
    assert len(receiver.hits) == 3


def test_silent_test_credentials_notify_nothing(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    assert sandbox.settings(notify=False)["notify"] is False
    pref = gateway.create_preference(
        preference_body(notification_url=receiver.url), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"], status="pending")["id"]
    sandbox.control(f"/payments/{payment_id}/status", {"status": "approved"})
    gateway.refund_payment(payment_id, amount=Decimal("1"), idempotency_key="r1")
    sandbox.control(f"/payments/{payment_id}/refund", {"amount": 1})
    sandbox.control(f"/payments/{payment_id}/chargeback")

    # The changes are in the API, and only a search finds them.
    payment = gateway.get_payment(payment_id)
    assert (payment["status"], payment["transaction_amount_refunded"]) == ("charged_back", 2)
    assert [p["id"] for p in gateway.search_payments(external_reference="purchase-1")] == [
        payment_id
    ]
    assert sandbox.deliveries() == [] and receiver.hits == []
    # Reset restores the default: notifications go again.
    assert sandbox.control("/reset").ok
    assert requests.get(f"{sandbox.url}/_sandbox/settings", timeout=5).json()["notify"] is True
    pref = gateway.create_preference(
        preference_body(notification_url=receiver.url), idempotency_key="p2"
    )
    paid(sandbox, pref["id"])
    receiver.wait(1)


def test_settings_are_checked_before_anything_changes(sandbox: Sandbox):
    before = requests.get(f"{sandbox.url}/_sandbox/settings", timeout=5).json()
    assert before == {
        "notify": True,
        "require_https": False,
        "refund_status": "approved",
        "clock_offset_s": 0,
    }
    for bad in (
        {"notify": "no"},
        {"require_https": 1},
        {"refund_status": "rejected"},
        {"clock_offset_s": "1d"},
        {"notify": False, "colour": "red"},
    ):
        answer = sandbox.control("/settings", bad)
        assert answer.status_code == 400, bad
        assert answer.json()["status"] == 400 and answer.json()["message"]
    assert requests.get(f"{sandbox.url}/_sandbox/settings", timeout=5).json() == before


def test_production_mode_refuses_a_plain_http_notification_url(
    gateway: MercadoPagoGateway, sandbox: Sandbox
):
    sandbox.settings(require_https=True)
    with pytest.raises(ProviderError) as caught:
        gateway.create_preference(
            preference_body(notification_url="http://shop.test/hooks"), idempotency_key="p1"
        )
    assert caught.value.extra["status_code"] == 400
    assert "https" in caught.value.detail
    secure = gateway.create_preference(
        preference_body(notification_url="https://shop.test/hooks"), idempotency_key="p2"
    )
    assert secure["notification_url"] == "https://shop.test/hooks"
    assert gateway.create_preference(preference_body(), idempotency_key="p3")["id"]


def test_cli_takes_require_https():
    """`python -m sandbox.mercadopago --require-https` starts in production mode."""
    command = [sys.executable, "-m", "sandbox.mercadopago", "--port", "0", "--require-https"]
    env = {**os.environ, "SANDBOX_PUBLIC_URL": "http://127.0.0.1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            settings = requests.get(f"{url}/_sandbox/settings", timeout=5).json()
            assert settings["require_https"] is True
            requests.post(f"{url}/_sandbox/reset", timeout=5)
            after = requests.get(f"{url}/_sandbox/settings", timeout=5).json()
            assert after["require_https"] is True
        finally:
            process.terminate()
            process.wait(timeout=10)
