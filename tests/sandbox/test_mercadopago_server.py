"""The MercadoPago sandbox, driven through the real SDK (our gateway) and a loopback receiver."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from market.errors import ProviderError, ProviderTransientError
from market.payments.mercadopago.client import MercadoPagoGateway
from tests.sandbox.helpers import (
    TOKEN,
    Receiver,
    Sandbox,
    assert_signed,
    paid,
    preference_body,
    webhooks_only,
)
from tests.support.poll import wait_for

# REST API through the SDK ----------------------------------------------------------------------


def test_preference_create_is_idempotent_per_key(gateway: MercadoPagoGateway, sandbox: Sandbox):
    first = gateway.create_preference(preference_body(), idempotency_key="purchase-1")
    again = gateway.create_preference(preference_body(), idempotency_key="purchase-1")
    other = gateway.create_preference(preference_body("purchase-2"), idempotency_key="purchase-2")

    assert again["id"] == first["id"] != other["id"]
    assert first["init_point"] == f"{sandbox.url}/checkout/v1/redirect?pref_id={first['id']}"
    assert first["sandbox_init_point"] == first["init_point"]
    fetched = gateway.get_preference(first["id"])
    assert fetched["external_reference"] == "purchase-1"
    assert fetched["items"][0]["unit_price"] == 150.25
    assert fetched["metadata"] == {"purchase_id": "purchase-1"}


@pytest.mark.parametrize(
    "items",
    [[], [{"title": "x", "quantity": 0, "unit_price": 1}], [{"quantity": 1, "unit_price": -1}]],
)
def test_invalid_items_are_refused_for_good(gateway: MercadoPagoGateway, items: list[Any]):
    with pytest.raises(ProviderError) as caught:
        gateway.create_preference({"items": items}, idempotency_key="bad")
    assert type(caught.value) is ProviderError
    assert caught.value.extra["status_code"] == 400


def test_auto_return_needs_a_success_url(gateway: MercadoPagoGateway):
    body = preference_body(auto_return="approved", back_urls={"failure": "http://shop.test/f"})
    with pytest.raises(ProviderError) as caught:
        gateway.create_preference(body, idempotency_key="p1")
    assert "back_url.success" in caught.value.detail


def test_idempotency_key_must_fit_the_sdk_limits(gateway: MercadoPagoGateway):
    with pytest.raises(ValueError):
        gateway.create_preference(preference_body(), idempotency_key="")
    with pytest.raises(ValueError):
        gateway.create_preference(preference_body(), idempotency_key="k" * 65)


def test_control_api_refuses_bad_requests(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    assert sandbox.control(f"/preferences/{pref['id']}/pay", {"status": "lost"}).status_code == 400
    assert sandbox.control(f"/preferences/{pref['id']}/pay", {"webhook": "x"}).status_code == 400
    assert sandbox.control("/preferences/nope/pay").status_code == 404
    assert sandbox.control("/payments/1/status", {"status": "approved"}).status_code == 404
    assert sandbox.control("/chaos", {"error_rate": 2}).status_code == 400
    assert sandbox.deliveries() == []
    assert gateway.search_payments(external_reference="purchase-1") == []


def test_bad_token_is_refused(gateway: MercadoPagoGateway, sandbox: Sandbox):
    intruder = MercadoPagoGateway("TEST-wrong", api_base_url=sandbox.url, timeout=5)
    with pytest.raises(ProviderError) as caught:
        intruder.get_payment(1)
    assert type(caught.value) is ProviderError
    assert caught.value.extra["status_code"] == 401
    assert intruder.ping() is False
    assert gateway.ping() is True


def test_payment_get_and_search(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    rejected = paid(sandbox, pref["id"], status="rejected", webhook="withhold")
    approved = paid(sandbox, pref["id"], webhook="withhold")

    payment = gateway.get_payment(approved["id"])
    assert payment["status"] == "approved"
    assert payment["status_detail"] == "accredited"
    assert payment["transaction_amount"] == 300.5
    assert payment["transaction_amount_refunded"] == 0
    assert payment["currency_id"] == "ARS"
    assert payment["external_reference"] == "purchase-1"
    assert payment["metadata"] == {"purchase_id": "purchase-1"}
    assert payment["live_mode"] is False
    assert payment["order"]["type"] == "mercadopago"
    assert payment["date_approved"]
    assert gateway.get_payment(rejected["id"])["status_detail"] == "cc_rejected_other_reason"
    found = gateway.search_payments(external_reference="purchase-1")
    assert [p["id"] for p in found] == [approved["id"], rejected["id"]]
    assert gateway.search_payments(external_reference="nobody") == []


def test_unknown_payment_is_a_404_provider_error(gateway: MercadoPagoGateway):
    with pytest.raises(ProviderError) as caught:
        gateway.get_payment(42)
    assert caught.value.extra["provider_status"] == 404
    assert "not found" in caught.value.detail.lower()


def test_partial_then_full_refund(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]

    part = gateway.refund_payment(payment_id, amount=Decimal("100.25"), idempotency_key="r1")
    replay = gateway.refund_payment(payment_id, amount=Decimal("100.25"), idempotency_key="r1")
    assert replay == part
    assert part["amount"] == 100.25 and part["status"] == "approved"
    assert part["payment_id"] == payment_id
    payment = gateway.get_payment(payment_id)
    assert (payment["status"], payment["status_detail"]) == ("approved", "partially_refunded")
    assert payment["transaction_amount_refunded"] == 100.25

    with pytest.raises(ProviderError):
        gateway.refund_payment(payment_id, amount=Decimal("500"), idempotency_key="r2")
    rest = gateway.refund_payment(payment_id, amount=None, idempotency_key="r3")
    assert rest["amount"] == 200.25
    payment = gateway.get_payment(payment_id)
    assert (payment["status"], payment["status_detail"]) == ("refunded", "refunded")
    assert payment["transaction_amount_refunded"] == 300.5
    assert [r["id"] for r in payment["refunds"]] == [part["id"], rest["id"]]


def test_refund_of_a_payment_not_approved_is_refused(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment_id = paid(sandbox, pref["id"], status="pending", webhook="withhold")["id"]
    with pytest.raises(ProviderError) as caught:
        gateway.refund_payment(payment_id, amount=None, idempotency_key="r1")
    assert caught.value.extra["status_code"] == 400


def test_chargeback_and_merchant_order(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    rejected = paid(sandbox, pref["id"], status="rejected", webhook="withhold")
    approved = paid(sandbox, pref["id"], webhook="withhold")

    order = gateway.get_merchant_order(approved["order"]["id"])
    assert order["preference_id"] == pref["id"]
    assert order["external_reference"] == "purchase-1"
    assert order["order_status"] == "paid" and order["paid_amount"] == 300.5
    assert {p["id"]: p["status"] for p in order["payments"]} == {
        rejected["id"]: "rejected",
        approved["id"]: "approved",
    }

    answer = sandbox.control(f"/payments/{approved['id']}/chargeback", {"webhook": "withhold"})
    assert answer.json()["status"] == "charged_back"
    assert gateway.get_payment(approved["id"])["status"] == "charged_back"
    assert sandbox.control(f"/payments/{approved['id']}/chargeback").status_code == 400


def test_chaos_failures_are_transient(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]

    sandbox.control("/chaos", {"error_rate": 1})
    with pytest.raises(ProviderTransientError) as caught:
        gateway.get_payment(payment_id)
    assert caught.value.extra["provider_status"] == 500
    sandbox.control("/chaos", {"error_rate": 1, "error_status": 429})
    with pytest.raises(ProviderTransientError):
        gateway.create_preference(preference_body(), idempotency_key="p1")
    assert gateway.ping() is False
    # The control API is never affected.
    assert sandbox.control(f"/payments/{payment_id}/status", {"status": "approved"}).ok

    sandbox.control("/chaos", {"timeout_rate": 1, "hang_s": 5})
    impatient = MercadoPagoGateway(TOKEN, api_base_url=sandbox.url, timeout=0.2)
    with pytest.raises(ProviderTransientError):
        impatient.get_payment(payment_id)

    sandbox.control("/chaos", {})
    assert gateway.get_payment(payment_id)["id"] == payment_id


def test_unreachable_api_is_transient():
    gateway = MercadoPagoGateway(TOKEN, api_base_url="http://127.0.0.1:9", timeout=1)
    with pytest.raises(ProviderTransientError):
        gateway.get_payment(1)
    assert gateway.ping() is False


# Webhooks --------------------------------------------------------------------------------------


def test_payment_sends_signed_webhooks(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    hook = webhooks_only(f"{receiver.url}?source=mp")
    pref = gateway.create_preference(preference_body(notification_url=hook), idempotency_key="p1")
    payment = paid(sandbox, pref["id"], status="pending")
    sandbox.control(f"/payments/{payment['id']}/status", {"status": "approved"})

    created, updated = receiver.wait(2)
    for hit in (created, updated):
        assert hit.path == "/hooks/mp"
        assert hit.query["source"] == ["mp"]
        assert_signed(hit, payment["id"])
        assert hit.body["data"] == {"id": str(payment["id"])}
        assert hit.body["type"] == "payment" and hit.body["api_version"] == "v1"
        assert hit.body["live_mode"] is False
        assert hit.body["user_id"] == str(pref["collector_id"])
    assert {created.body["action"], updated.body["action"]} == {
        "payment.created",
        "payment.updated",
    }
    assert created.body["id"] != updated.body["id"]


def test_refunds_and_chargebacks_notify(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]
    gateway.refund_payment(payment_id, amount=Decimal("1"), idempotency_key="r1")
    gateway.refund_payment(payment_id, amount=Decimal("1"), idempotency_key="r1")
    answer = sandbox.control(f"/payments/{payment_id}/refund", {"amount": 2})
    assert answer.json()["transaction_amount_refunded"] == 3
    sandbox.control(f"/payments/{payment_id}/chargeback")

    # A chargeback notifies its own topic and the payment's change (in either order).
    hits = receiver.wait(4)
    assert sorted((h.body["type"], h.body["action"]) for h in hits) == [
        *[("payment", "payment.updated")] * 3,
        ("topic_chargebacks_wh", "chargeback.created"),
    ]
    assert len({h.body["id"] for h in hits}) == 4
    sandbox.control(f"/payments/{payment_id}/status", {"status": "approved"})
    receiver.wait(5)  # nothing else was queued before this one: the replayed refund sent none
    assert len(receiver.hits) == 5


def test_webhook_is_retried_until_accepted(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    receiver.statuses.extend([500, 204])
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"])["id"]

    hits = receiver.wait(3)
    assert {h.body["id"] for h in hits} == {hits[0].body["id"]}
    # MercadoPago does not sign a retry again: the first ts and x-request-id stay.
    assert len({(h.headers["x-request-id"], h.headers["x-signature"]) for h in hits}) == 1
    for hit in hits:
        assert_signed(hit, payment_id)
    log = wait_for(lambda: d if len(d := sandbox.deliveries()) == 3 else None, timeout=5)
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in log] == [
        (1, 500, "retrying"),
        (2, 204, "retrying"),
        (3, 200, "delivered"),
    ]
    assert len({(d["ts"], d["request_id"]) for d in log}) == 1
    assert log[0]["headers"]["x-signature"] == hits[0].headers["x-signature"]
    assert hits[0].headers["x-signature"].startswith(f"ts={log[0]['ts']},v1=")


def test_webhook_gives_up_after_the_last_delay(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(
        preference_body(notification_url="http://127.0.0.1:9/refused"), idempotency_key="p1"
    )
    paid(sandbox, pref["id"])

    # The webhook and its two IPN copies (payment, merchant_order) each retry, then give up.
    def finished() -> list[dict[str, Any]] | None:
        log = sandbox.deliveries()
        return log if sum(d["outcome"] == "gave_up" for d in log) == 3 else None

    log = wait_for(finished, timeout=5)
    for form, topic in (("webhook", "payment"), ("ipn", "payment"), ("ipn", "merchant_order")):
        tries = [d for d in log if (d["form"], d["topic"]) == (form, topic)]
        assert [d["attempt"] for d in tries] == [1, 2, 3, 4], (form, topic)
        assert [d["outcome"] for d in tries] == ["retrying"] * 3 + ["gave_up"]
    assert all(d["status_code"] is None and d["error"] for d in log)


def test_duplicate_copies_are_identical(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"], webhook="duplicate", copies=3)["id"]

    hits = receiver.wait(3)
    assert len({json.dumps(h.body, sort_keys=True) for h in hits}) == 1
    assert len({(h.headers["x-request-id"], h.headers["x-signature"]) for h in hits}) == 1
    assert all(h.query["data.id"] == [str(payment_id)] for h in hits)


def test_withheld_webhook_is_sent_on_demand(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    pref = gateway.create_preference(
        preference_body(notification_url=webhooks_only(receiver.url)), idempotency_key="p1"
    )
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]

    sent = sandbox.control(f"/payments/{payment_id}/notify").json()
    assert sent["status_code"] == 200 and sent["outcome"] == "delivered"
    (first,) = receiver.wait(1)  # only the one asked for: the withheld one never went out
    assert first.body["action"] == "payment.created"
    assert_signed(first, payment_id)

    replay = {"request_id": first.headers["x-request-id"], "ts": "1700000000000"}
    sandbox.control(f"/payments/{payment_id}/notify", replay)
    second = receiver.wait(2)[1]
    assert second.headers["x-request-id"] == first.headers["x-request-id"]
    assert second.headers["x-signature"].startswith("ts=1700000000000,v1=")
    assert second.body == first.body


def test_panel_webhook_url_is_used_without_notification_url(
    start_sandbox: Callable[..., Sandbox], receiver: Receiver
):
    sandbox = start_sandbox(webhook_url=receiver.url)
    gateway = MercadoPagoGateway(TOKEN, api_base_url=sandbox.url, timeout=5)
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment_id = paid(sandbox, pref["id"])["id"]
    (hit,) = receiver.wait(1)
    assert_signed(hit, payment_id)


# Checkout page ---------------------------------------------------------------------------------


def test_checkout_page_redirects_to_the_back_url(
    gateway: MercadoPagoGateway, sandbox: Sandbox, receiver: Receiver
):
    back_urls = {
        "success": "http://shop.test/done?step=ok",
        "failure": "http://shop.test/failed",
        "pending": "http://shop.test/wait",
    }
    pref = gateway.create_preference(
        preference_body(
            notification_url=webhooks_only(receiver.url),
            back_urls=back_urls,
            auto_return="approved",
        ),
        idempotency_key="p1",
    )
    page = requests.get(pref["init_point"], timeout=5)
    assert page.status_code == 200
    assert "100 credits" in page.text
    # A plain form a real browser clicks: the button labels are part of the contract.
    assert '<form method="post" action="/checkout/v1/redirect">' in page.text
    for holder, label in (("APRO", "Approve"), ("OTHE", "Reject"), ("CONT", "Pending")):
        assert f'value="{holder}">{label}</button>' in page.text

    outcomes = {}
    for holder in ("APRO", "OTHE", "CONT"):
        answer = requests.post(
            f"{sandbox.url}/checkout/v1/redirect",
            data={"pref_id": pref["id"], "cardholder": holder},
            allow_redirects=False,
            timeout=5,
        )
        assert answer.status_code == 302
        outcomes[holder] = urlsplit(answer.headers["Location"])

    approved = parse_qs(outcomes["APRO"].query)
    assert outcomes["APRO"].path == "/done" and approved["step"] == ["ok"]
    assert approved["collection_status"] == approved["status"] == ["approved"]
    assert approved["external_reference"] == ["purchase-1"]
    assert approved["preference_id"] == [pref["id"]]
    assert approved["payment_id"] == approved["collection_id"]
    order_id = gateway.get_payment(approved["payment_id"][0])["order"]["id"]
    assert approved["merchant_order_id"] == [str(order_id)]
    assert gateway.get_payment(approved["payment_id"][0])["status"] == "approved"
    assert outcomes["OTHE"].path == "/failed"
    assert parse_qs(outcomes["OTHE"].query)["status"] == ["rejected"]
    assert outcomes["CONT"].path == "/wait"
    assert parse_qs(outcomes["CONT"].query)["status"] == ["in_process"]

    hits = receiver.wait(3)
    assert {h.body["action"] for h in hits} == {"payment.created"}


def test_checkout_without_back_url_shows_the_result(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    answer = requests.post(
        f"{sandbox.url}/checkout/v1/redirect",
        data={"pref_id": pref["id"], "cardholder": "APRO"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 200 and "approved" in answer.text
    missing = requests.get(f"{sandbox.url}/checkout/v1/redirect?pref_id=nope", timeout=5)
    assert missing.status_code == 404


def test_reset_forgets_everything(gateway: MercadoPagoGateway, sandbox: Sandbox):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment_id = paid(sandbox, pref["id"], webhook="withhold")["id"]
    sandbox.control("/chaos", {"error_rate": 1})
    assert sandbox.control("/reset").ok
    with pytest.raises(ProviderError) as caught:
        gateway.get_payment(payment_id)
    assert caught.value.extra["provider_status"] == 404
    again = gateway.create_preference(preference_body(), idempotency_key="p1")
    assert again["id"] != pref["id"]
    assert paid(sandbox, again["id"], webhook="withhold")["id"] > payment_id
