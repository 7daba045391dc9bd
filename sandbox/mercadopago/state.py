"""The sandbox's store: preferences, payments and merchant orders, and the rules MercadoPago
applies when a payment is made or changes status. Thread safe: every access holds `lock`."""

from __future__ import annotations

import copy
import itertools
import threading
import uuid
from decimal import Decimal
from typing import Any

from sandbox.mercadopago.common import (
    CENT,
    PAID,
    PAYMENT_STATUSES,
    STATUS_DETAIL,
    ApiError,
    Clock,
    dec,
    is_http_url,
    num,
    parse_datetime,
    total,
    with_query,
)

ORDER_PAYMENT_FIELDS = ("id", "status", "status_detail", "transaction_amount", "currency_id")
ORDER_PAYMENT_FIELDS += ("date_created", "date_approved", "date_last_updated")
# Payment types and the method each uses here; cash ones honour date_of_expiration.
PAYMENT_METHODS = {
    "credit_card": "visa",
    "debit_card": "debvisa",
    "account_money": "account_money",
    "ticket": "pagofacil",
    "atm": "redlink",
}
CASH_TYPES = ("ticket", "atm")
PREFERENCE_DATES = ("date_of_expiration", "expiration_date_from", "expiration_date_to")


class Store:
    """Everything the sandbox knows; `reset` forgets it but keeps the id counters."""

    def __init__(self, *, collector_id: int, id_offset: int, clock: Clock) -> None:
        self.collector_id, self.clock = collector_id, clock
        self.lock = threading.RLock()
        # Ids survive reset: a backend database may still hold ids handed out before it.
        self._payment_ids = itertools.count(1_000_000_001 + id_offset)
        self._order_ids = itertools.count(20_000_000_001 + id_offset)
        self.refund_ids = itertools.count(3_000_000_001 + id_offset)
        self.chargeback_ids = itertools.count(40_000_000_001 + id_offset)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.preferences: dict[str, dict[str, Any]] = {}
            self.api_base: dict[str, str] = {}  # per preference: the address it was made at
            self.payments: dict[int, dict[str, Any]] = {}
            self.orders: dict[int, dict[str, Any]] = {}
            self.refunds: dict[int, int] = {}  # refund id -> payment id
            self.chargebacks: dict[str, dict[str, Any]] = {}
            self.idempotent: dict[tuple[str, ...], Any] = {}

    # Preferences ------------------------------------------------------------------------------

    def create_preference(
        self, body: Any, key: str | None, api_base: str, *, require_https: bool
    ) -> dict[str, Any]:
        """Validate and store a preference; the same idempotency key returns the same one."""
        if not isinstance(body, dict):
            raise ApiError(400, "invalid body: a JSON object is expected")
        items = _validate_items(body.get("items"))
        back_urls = body.get("back_urls") or {}
        if not isinstance(back_urls, dict):
            raise ApiError(400, "back_urls must be an object")
        if body.get("auto_return") and not back_urls.get("success"):
            # MercadoPago's own check; a common integration mistake.
            raise ApiError(400, "auto_return invalid. back_url.success must be defined")
        url = body.get("notification_url")
        if url is not None and (not isinstance(url, str) or not is_http_url(url)):
            raise ApiError(400, "notification_url attribute must be url valid")
        if url is not None and require_https and not url.startswith("https://"):
            # Production credentials take only https notification URLs.
            raise ApiError(400, "notification_url attribute must be https in production")
        if "expires" in body and not isinstance(body["expires"], bool):
            raise ApiError(400, "expires must be a boolean")
        for name in PREFERENCE_DATES:
            if body.get(name) is not None:
                parse_datetime(body[name], name)
        with self.lock:
            if key and ("preference", key) in self.idempotent:
                return dict(self.preferences[self.idempotent[("preference", key)]])
            pref_id = f"{self.collector_id}-{uuid.uuid4()}"
            checkout = with_query(f"{api_base}/checkout/v1/redirect", [("pref_id", pref_id)])
            pref = {
                **body,
                "id": pref_id,
                "items": items,
                "init_point": checkout,
                "sandbox_init_point": checkout,
                "date_created": self.clock.stamp(),
                "collector_id": self.collector_id,
                "client_id": str(self.collector_id),
                "operation_type": "regular_payment",
                "site_id": "MLA",
                "expires": bool(body.get("expires", False)),
            }
            self.preferences[pref_id] = pref
            self.api_base[pref_id] = api_base
            if key:
                self.idempotent[("preference", key)] = pref_id
            return dict(pref)

    def preference(self, pref_id: str) -> dict[str, Any]:
        """The stored preference, or a 404."""
        with self.lock:
            if pref_id not in self.preferences:
                raise ApiError(404, f"preference {pref_id} not found", "not_found")
            return dict(self.preferences[pref_id])

    def check_open(self, pref: dict[str, Any]) -> None:
        """A 400 unless the preference's checkout is open now (`expires` bounds it)."""
        if not pref.get("expires"):
            return
        now = self.clock.now()
        start, end = pref.get("expiration_date_from"), pref.get("expiration_date_to")
        if start and now < parse_datetime(start, "expiration_date_from"):
            raise ApiError(400, "the preference is not valid yet (expiration_date_from)")
        if end and now > parse_datetime(end, "expiration_date_to"):
            raise ApiError(400, "the preference has expired (expiration_date_to)")

    # Payments ---------------------------------------------------------------------------------

    def payment(self, payment_id: int) -> dict[str, Any]:
        """A copy of the payment, or a 404."""
        with self.lock:
            return copy.deepcopy(self.stored_payment(payment_id))

    def stored_payment(self, payment_id: int) -> dict[str, Any]:
        """The payment itself (callers hold `lock`), or a 404."""
        if payment_id not in self.payments:
            raise ApiError(404, "Payment not found", "not_found")
        return self.payments[payment_id]

    def touch(self, payment: dict[str, Any]) -> None:
        """Record a change of the payment: what a date_last_updated search finds."""
        payment["date_last_updated"] = self.clock.stamp()

    def pay(
        self,
        pref_id: str,
        status: str,
        status_detail: str | None,
        payment_type: str = "credit_card",
    ) -> dict[str, Any]:
        """Create a payment for the preference (and its merchant order on the first one)."""
        if status not in PAYMENT_STATUSES - {"refunded", "charged_back"}:
            raise ApiError(400, f"unknown payment status {status!r}")
        if payment_type not in PAYMENT_METHODS:
            raise ApiError(400, f"payment_type_id must be one of {', '.join(PAYMENT_METHODS)}")
        with self.lock:
            pref = self.preferences.get(pref_id)
            if pref is None:
                raise ApiError(404, f"preference {pref_id} not found", "not_found")
            self.check_open(pref)
            cash_until = pref.get("date_of_expiration") if payment_type in CASH_TYPES else None
            if cash_until and self.clock.now() > parse_datetime(cash_until, "date_of_expiration"):
                raise ApiError(400, "the preference's date_of_expiration has passed")
            now = self.clock.stamp()
            order_id = self._order_of(pref, now)
            items = pref["items"]
            payment_id = next(self._payment_ids)
            self.payments[payment_id] = {
                "id": payment_id,
                "status": status,
                "status_detail": status_detail or STATUS_DETAIL[status],
                "external_reference": pref.get("external_reference"),
                "transaction_amount": num(total(items).quantize(CENT)),
                "transaction_amount_refunded": 0,
                "currency_id": items[0].get("currency_id", "ARS"),
                "description": items[0].get("title"),
                "date_created": now,
                "date_approved": now if status == "approved" else None,
                "date_last_updated": now,
                "date_of_expiration": cash_until,
                "live_mode": False,
                "metadata": copy.deepcopy(pref.get("metadata") or {}),
                # The real API does not echo the preference id; this makes tests easier to read.
                "additional_info": {"items": items, "preference_id": pref_id},
                "order": {"id": order_id, "type": "mercadopago"},
                "refunds": [],
                "payer": {"id": "1234567", "email": "test_user_80507629@testuser.com"},
                "collector_id": self.collector_id,
                "payment_method_id": PAYMENT_METHODS[payment_type],
                "payment_type_id": payment_type,
                "installments": 1,
                "operation_type": "regular_payment",
                "notification_url": pref.get("notification_url"),
                "captured": True,
            }
            return self.payment(payment_id)

    def _order_of(self, pref: dict[str, Any], now: str) -> int:
        found = next((o["id"] for o in self.orders.values() if o["preference_id"] == pref["id"]), 0)
        if found:
            return found
        order_id = next(self._order_ids)
        self.orders[order_id] = {
            "id": order_id,
            "preference_id": pref["id"],
            "external_reference": pref.get("external_reference"),
            "notification_url": pref.get("notification_url"),
            "collector": {"id": self.collector_id},
            "date_created": now,
            "is_test": True,
            "cancelled": False,
        }
        return order_id

    def set_status(self, payment_id: int, status: str, status_detail: str | None) -> dict[str, Any]:
        """Move the payment to `status` (any, e.g. pending to approved)."""
        if status not in PAYMENT_STATUSES:
            raise ApiError(400, f"unknown payment status {status!r}")
        with self.lock:
            payment = self.stored_payment(payment_id)
            until = payment.get("date_of_expiration")
            if (
                status == "approved"
                and payment["status"] != "approved"
                and until
                and self.clock.now() > parse_datetime(until, "date_of_expiration")
            ):
                # A cash or ticket payment cannot be paid after its date_of_expiration.
                raise ApiError(400, "the payment's date_of_expiration has passed")
            payment["status"] = status
            payment["status_detail"] = status_detail or STATUS_DETAIL[status]
            self.touch(payment)
            if status == "approved" and not payment["date_approved"]:
                payment["date_approved"] = payment["date_last_updated"]
            return self.payment(payment_id)

    # Merchant orders --------------------------------------------------------------------------

    def merchant_order(self, order_id: int) -> dict[str, Any]:
        """The merchant order with its payments and amounts computed from them, or a 404."""
        with self.lock:
            if order_id not in self.orders:
                raise ApiError(404, f"Merchant Order {order_id} not found", "not_found")
            order = dict(self.orders[order_id])
            pref = self.preferences[order["preference_id"]]
            payments = [
                copy.deepcopy(p) for p in self.payments.values() if p["order"]["id"] == order_id
            ]
        amount = total(pref["items"]).quantize(CENT)
        paid = sum(
            (dec(p["transaction_amount"]) for p in payments if p["status"] in PAID), Decimal(0)
        )
        refunded = sum((dec(p["transaction_amount_refunded"]) for p in payments), Decimal(0))
        if paid >= amount:
            state = "reverted" if refunded >= paid else "partially_reverted" if refunded else "paid"
        elif any(p["status"] in ("pending", "in_process") for p in payments):
            state = "payment_in_process"
        else:
            state = "partially_paid" if paid else "payment_required"
        order |= {
            "status": "closed" if paid >= amount else "opened",
            "order_status": state,
            "total_amount": num(amount),
            "paid_amount": num(paid),
            "refunded_amount": num(refunded),
            "items": pref["items"],
            "last_updated": max(
                [order["date_created"], *(p["date_last_updated"] for p in payments)]
            ),
            "payments": [
                {key: p[key] for key in ORDER_PAYMENT_FIELDS}
                | {"total_paid_amount": p["transaction_amount"]}
                | {"amount_refunded": p["transaction_amount_refunded"]}
                for p in payments
            ],
        }
        return order


def _validate_items(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not items:
        raise ApiError(400, "items needed")
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"items[{index}] must be an object")
        quantity, price = item.get("quantity"), item.get("unit_price")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise ApiError(400, f"items[{index}].quantity must be a positive integer")
        if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
            raise ApiError(400, f"items[{index}].unit_price must be a positive number")
        checked.append({"currency_id": "ARS", **item})
    return checked
