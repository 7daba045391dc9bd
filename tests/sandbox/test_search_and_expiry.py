"""Payment search by date_last_updated (what reconciliation reads), and preferences that
expire: the sandbox's clock offset plays "later" without waiting."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests

from market.errors import ProviderError
from market.payments.mercadopago.client import MercadoPagoGateway
from tests.sandbox.helpers import TOKEN, Sandbox, paid, preference_body

HOUR = 3600


def _search(sandbox: Sandbox, **filters: Any) -> dict[str, Any]:
    answer = sandbox.sdk().payment().search(filters)
    assert answer["status"] == 200, answer
    return answer["response"]


def _at(stamp: str, seconds: float = 0) -> str:
    return (datetime.fromisoformat(stamp) + timedelta(seconds=seconds)).isoformat()


def test_search_by_date_last_updated_finds_every_kind_of_change(
    gateway: MercadoPagoGateway, sandbox: Sandbox
):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    ids = [paid(sandbox, pref["id"], webhook="withhold")["id"] for _ in range(4)]
    start = gateway.get_payment(ids[-1])["date_last_updated"]

    # One change of each kind, an hour apart on the sandbox's clock.
    changes = [
        (ids[2], "/refund", {"amount": 1, "webhook": "withhold"}),
        (ids[0], "/chargeback", {"webhook": "withhold"}),
        (ids[3], "/status", {"status": "cancelled", "webhook": "withhold"}),
    ]
    for hours, (payment_id, action, payload) in enumerate(changes, start=1):
        sandbox.settings(clock_offset_s=hours * HOUR)
        assert sandbox.control(f"/payments/{payment_id}{action}", payload).ok
    stamps = {pid: gateway.get_payment(pid)["date_last_updated"] for pid in ids}
    assert stamps[ids[1]] == gateway.get_payment(ids[1])["date_created"]  # never changed

    found = _search(
        sandbox,
        range="date_last_updated",
        begin_date=_at(start, 1),
        end_date=_at(start, 4 * HOUR),
        sort="date_last_updated",
        criteria="asc",
    )
    assert [p["id"] for p in found["results"]] == [ids[2], ids[0], ids[3]]
    assert found["paging"] == {"total": 3, "limit": 30, "offset": 0}
    assert [p["status"] for p in found["results"]] == ["approved", "charged_back", "cancelled"]

    # Bounds are inclusive; paging walks the same order.
    page = _search(
        sandbox,
        range="date_last_updated",
        begin_date=stamps[ids[0]],
        end_date=stamps[ids[3]],
        sort="date_last_updated",
        criteria="asc",
        limit=1,
        offset=1,
    )
    assert page["paging"] == {"total": 2, "limit": 1, "offset": 1}
    assert [p["id"] for p in page["results"]] == [ids[3]]
    newest = _search(sandbox, sort="date_last_updated", criteria="desc", limit=2)
    assert [p["id"] for p in newest["results"]] == [ids[3], ids[0]]
    assert newest["paging"]["total"] == 4


def test_search_filters_combine(gateway: MercadoPagoGateway, sandbox: Sandbox):
    one = gateway.create_preference(preference_body("one"), idempotency_key="p1")
    two = gateway.create_preference(preference_body("two"), idempotency_key="p2")
    rejected = paid(sandbox, one["id"], status="rejected", webhook="withhold")["id"]
    approved = paid(sandbox, one["id"], webhook="withhold")["id"]
    paid(sandbox, two["id"], webhook="withhold")
    found = _search(sandbox, external_reference="one", status="approved")
    assert [p["id"] for p in found["results"]] == [approved]
    found = _search(sandbox, external_reference="one", sort="date_created", criteria="asc")
    assert [p["id"] for p in found["results"]] == [rejected, approved]
    assert _search(sandbox, status="refunded")["results"] == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=1001",
        "limit=0",
        "offset=-1",
        "limit=ten",
        "sort=amount",
        "criteria=up",
        "range=money&begin_date=2026-01-01T00:00:00Z",
        "range=date_last_updated&begin_date=yesterday",
        "range=date_last_updated&begin_date=2026-01-01T00:00:00",  # no offset
        "begin_date=2026-01-01T00:00:00Z",  # no range
    ],
)
def test_search_refuses_bad_queries(sandbox: Sandbox, query: str):
    answer = requests.get(
        f"{sandbox.url}/v1/payments/search?{query}",
        headers={"Authorization": "Bearer TEST-sandbox-token"},
        timeout=5,
    )
    assert answer.status_code == 400, query
    assert answer.json()["status"] == 400 and answer.json()["message"]


def test_search_takes_the_largest_page_and_offsets_with_plus(
    gateway: MercadoPagoGateway, sandbox: Sandbox
):
    pref = gateway.create_preference(preference_body(), idempotency_key="p1")
    payment = paid(sandbox, pref["id"], webhook="withhold")
    begin = quote(_at(payment["date_created"], -60))  # an encoded -03:00 offset
    answer = requests.get(
        f"{sandbox.url}/v1/payments/search?range=date_created&begin_date={begin}&limit=1000",
        headers={"Authorization": "Bearer TEST-sandbox-token"},
        timeout=5,
    )
    assert answer.json()["paging"]["limit"] == 1000
    assert [p["id"] for p in answer.json()["results"]] == [payment["id"]]


def _now(sandbox: Sandbox) -> str:
    """The sandbox's now: the date_created of a throwaway preference."""
    gateway = MercadoPagoGateway(TOKEN, api_base_url=sandbox.url, timeout=5)
    return gateway.create_preference(preference_body("clock"), idempotency_key="clock")[
        "date_created"
    ]


def test_expired_preference_refuses_payment(gateway: MercadoPagoGateway, sandbox: Sandbox):
    now = _now(sandbox)
    body = preference_body(
        expires=True,
        expiration_date_from=_at(now, -HOUR),
        expiration_date_to=_at(now, HOUR),
        date_of_expiration=_at(now, 2 * HOUR),
    )
    pref = gateway.create_preference(body, idempotency_key="p1")
    kept = gateway.get_preference(pref["id"])
    for name in ("expires", "expiration_date_from", "expiration_date_to", "date_of_expiration"):
        assert kept[name] == body[name]
    page = requests.get(pref["init_point"], timeout=5)
    assert page.status_code == 200 and "Approve" in page.text
    assert paid(sandbox, pref["id"], webhook="withhold")["status"] == "approved"

    sandbox.settings(clock_offset_s=HOUR + 60)  # past expiration_date_to
    assert requests.get(pref["init_point"], timeout=5).status_code == 400
    form = {"pref_id": pref["id"], "cardholder": "APRO"}
    clicked = requests.post(f"{sandbox.url}/checkout/v1/redirect", data=form, timeout=5)
    assert clicked.status_code == 400 and "expired" in clicked.text
    refused = sandbox.control(f"/preferences/{pref['id']}/pay", {"status": "approved"})
    assert refused.status_code == 400 and "expired" in refused.json()["message"]
    assert len(_search(sandbox, external_reference="purchase-1")["results"]) == 1

    # Without `expires` the same dates bound nothing.
    open_body = {**body, "expires": False}
    still_open = gateway.create_preference(open_body, idempotency_key="p2")
    assert paid(sandbox, still_open["id"], webhook="withhold")["status"] == "approved"


def test_cash_payment_cannot_be_paid_after_date_of_expiration(
    gateway: MercadoPagoGateway, sandbox: Sandbox
):
    now = _now(sandbox)
    body = preference_body(date_of_expiration=_at(now, 2 * HOUR))
    pref = gateway.create_preference(body, idempotency_key="p1")
    ticket = paid(
        sandbox, pref["id"], status="pending", payment_type_id="ticket", webhook="withhold"
    )
    assert (ticket["payment_type_id"], ticket["status_detail"]) == (
        "ticket",
        "pending_waiting_payment",
    )
    assert ticket["date_of_expiration"] == body["date_of_expiration"]
    card = paid(sandbox, pref["id"], status="pending", webhook="withhold")
    assert card["date_of_expiration"] is None

    sandbox.settings(clock_offset_s=3 * HOUR)
    late = sandbox.control(f"/payments/{ticket['id']}/status", {"status": "approved"})
    assert late.status_code == 400 and "date_of_expiration" in late.json()["message"]
    assert gateway.get_payment(ticket["id"])["status"] == "pending"
    # MercadoPago cancels it instead; a card payment is not bound by the date.
    cancelled = sandbox.control(f"/payments/{ticket['id']}/status", {"status": "cancelled"})
    assert cancelled.json()["status"] == "cancelled"
    approved = sandbox.control(f"/payments/{card['id']}/status", {"status": "approved"})
    assert approved.json()["status"] == "approved"
    new_ticket = sandbox.control(
        f"/preferences/{pref['id']}/pay", {"status": "pending", "payment_type_id": "ticket"}
    )
    assert new_ticket.status_code == 400


@pytest.mark.parametrize(
    "fields",
    [
        {"expires": "yes"},
        {"expiration_date_to": "tomorrow"},
        {"date_of_expiration": "2026-12-01T00:00:00"},  # no offset
    ],
)
def test_preference_dates_are_checked(gateway: MercadoPagoGateway, fields: dict[str, Any]):
    with pytest.raises(ProviderError) as caught:
        gateway.create_preference(preference_body(**fields), idempotency_key="p1")
    assert caught.value.extra["status_code"] == 400
