"""Refunds as MercadoPago makes them: from the panel (partial or completing), and with their
own status that may answer `in_process` first and settle later."""

from __future__ import annotations

from decimal import Decimal

import pytest

from market.errors import ProviderError
from market.payments.mercadopago.client import MercadoPagoGateway
from tests.sandbox.helpers import (
    Receiver,
    Sandbox,
    assert_signed,
    paid,
    preference_body,
    webhooks_only,
)


def _approved(gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver) -> int:
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    return paid(sandbox, pref["id"], webhook="withhold")["id"]


def test_panel_refund_partial_then_completing(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    payment_id = _approved(gateway, sandbox, receiver)
    before = gateway.get_payment(payment_id)["date_last_updated"]

    part = sandbox.control(f"/payments/{payment_id}/refund", {"amount": 100.25}).json()
    assert (part["status"], part["status_detail"]) == ("approved", "partially_refunded")
    assert part["transaction_amount_refunded"] == 100.25
    assert part["date_last_updated"] >= before
    (hit,) = receiver.wait(1)
    assert hit.body["action"] == "payment.updated"
    assert_signed(hit, payment_id)

    rest = sandbox.control(f"/payments/{payment_id}/refund", {"amount": 200.25}).json()
    assert (rest["status"], rest["status_detail"]) == ("refunded", "refunded")
    assert rest["transaction_amount_refunded"] == 300.5
    assert [r["status"] for r in rest["refunds"]] == ["approved", "approved"]
    receiver.wait(2)
    # Nothing is left to refund.
    assert sandbox.control(f"/payments/{payment_id}/refund", {"amount": 1}).status_code == 400


def test_panel_refund_in_process_then_approved(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    payment_id = _approved(gateway, sandbox, receiver)
    answer = sandbox.control(
        f"/payments/{payment_id}/refund", {"amount": 50, "refund_status": "in_process"}
    ).json()
    assert (answer["status"], answer["status_detail"]) == ("approved", "accredited")
    assert answer["transaction_amount_refunded"] == 0
    (refund,) = answer["refunds"]
    assert refund["status"] == "in_process"

    moved = sandbox.control(f"/refunds/{refund['id']}/status", {"status": "approved"})
    assert moved.json()["status"] == "approved"
    payment = gateway.get_payment(payment_id)
    assert (payment["status_detail"], payment["transaction_amount_refunded"]) == (
        "partially_refunded",
        50,
    )
    (hit,) = receiver.wait(1)  # only the settled refund notified
    assert hit.body["action"] == "payment.updated"
    bad = sandbox.control(f"/payments/{payment_id}/refund", {"refund_status": "rejected"})
    assert bad.status_code == 400


def test_rest_refund_answers_in_process_and_settles_later(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    payment_id = _approved(gateway, sandbox, receiver)
    sandbox.settings(refund_status="in_process")

    first = gateway.refund_payment(payment_id, amount=Decimal("100"), idempotency_key="r1")
    assert first["status"] == "in_process"
    assert gateway.refund_payment(payment_id, amount=Decimal("100"), idempotency_key="r1") == first
    payment = gateway.get_payment(payment_id)
    assert (payment["status"], payment["status_detail"]) == ("approved", "accredited")
    assert payment["transaction_amount_refunded"] == 0
    # The refund in process holds its amount: no more than the rest can be asked for.
    with pytest.raises(ProviderError):
        gateway.refund_payment(payment_id, amount=Decimal("250"), idempotency_key="r2")
    second = gateway.refund_payment(payment_id, amount=None, idempotency_key="r3")
    assert (second["status"], second["amount"]) == ("in_process", 200.5)
    sdk = sandbox.sdk()
    listed = sdk.refund().list_all(payment_id)["response"]
    assert [(r["id"], r["status"]) for r in listed] == [
        (first["id"], "in_process"),
        (second["id"], "in_process"),
    ]

    rejected = sandbox.control(f"/refunds/{first['id']}/status", {"status": "rejected"})
    assert rejected.json()["status"] == "rejected"
    assert gateway.get_payment(payment_id)["transaction_amount_refunded"] == 0
    (hit,) = receiver.wait(1)
    assert hit.body["action"] == "payment.updated"

    sandbox.control(f"/refunds/{second['id']}/status", {"status": "approved", "webhook": "send"})
    payment = gateway.get_payment(payment_id)
    assert (payment["status_detail"], payment["transaction_amount_refunded"]) == (
        "partially_refunded",
        200.5,
    )
    assert [r["status"] for r in payment["refunds"]] == ["rejected", "approved"]
    fetched = sdk.refund().get(payment_id, second["id"])["response"]
    assert fetched["status"] == "approved"
    receiver.wait(2)
    # The rejected refund freed its amount: the rest can be refunded, at once now.
    sandbox.settings(refund_status="approved")
    last = gateway.refund_payment(payment_id, amount=None, idempotency_key="r4")
    assert (last["status"], last["amount"]) == ("approved", 100)
    assert gateway.get_payment(payment_id)["status"] == "refunded"


def test_refund_status_moves_are_checked(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    payment_id = _approved(gateway, sandbox, receiver)
    refund = gateway.refund_payment(payment_id, amount=Decimal("1"), idempotency_key="r1")
    assert refund["status"] == "approved"
    for path, payload, status in (
        (f"/refunds/{refund['id']}/status", {"status": "rejected"}, 400),  # already final
        (f"/refunds/{refund['id']}/status", {"status": "pending"}, 400),
        ("/refunds/42/status", {"status": "approved"}, 404),
    ):
        assert sandbox.control(path, payload).status_code == status
    assert gateway.get_payment(payment_id)["transaction_amount_refunded"] == 1
