"""Refunds: created through the REST API or "from the panel", each with its own status.

An `approved` refund changes the payment at once (partially_refunded, or refunded when it
completes the amount); an `in_process` one only reserves its amount until it is moved to
`approved` (the payment changes then) or `rejected` (the amount is free again).
"""

from __future__ import annotations

import copy
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.mercadopago.common import CENT, ApiError, dec, num
from sandbox.mercadopago.state import Store

REFUND_STATUSES = ("approved", "in_process")
FINAL_STATUSES = ("approved", "rejected")


def create_refund(
    store: Store, payment_id: int, amount: Any, key: str | None, status: str = "approved"
) -> tuple[dict[str, Any], bool]:
    """Refund `amount` (None: the rest); the flag is False for an idempotent replay."""
    if status not in REFUND_STATUSES:
        raise ApiError(400, f"refund_status must be one of {', '.join(REFUND_STATUSES)}")
    with store.lock:
        if key and ("refund", str(payment_id), key) in store.idempotent:
            return dict(store.idempotent[("refund", str(payment_id), key)]), False
        payment = store.stored_payment(payment_id)
        if payment["status"] != "approved":
            raise ApiError(400, f"Payment with status {payment['status']} cannot be refunded")
        left = _refundable(payment)
        try:
            value = left if amount is None else dec(amount).quantize(CENT)
            valid = 0 < value <= left
        except InvalidOperation:
            valid = False
        if not valid:
            raise ApiError(400, f"amount must be a number within 0 and {left} (refundable)")
        now = store.clock.stamp()
        refund = {
            "id": next(store.refund_ids),
            "payment_id": payment_id,
            "amount": num(value),
            "status": status,
            "date_created": now,
            "date_last_updated": now,
            "source": {"id": str(store.collector_id), "type": "collector"},
            "refund_mode": "standard",
        }
        payment["refunds"].append(refund)
        store.refunds[refund["id"]] = payment_id
        if status == "approved":
            _apply(payment, value)
        store.touch(payment)
        if key:
            store.idempotent[("refund", str(payment_id), key)] = refund
        return dict(refund), True


def set_refund_status(store: Store, refund_id: int, status: str) -> dict[str, Any]:
    """Settle an `in_process` refund as `approved` (the payment changes now) or `rejected`."""
    if status not in FINAL_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(FINAL_STATUSES)}")
    with store.lock:
        if refund_id not in store.refunds:
            raise ApiError(404, f"refund {refund_id} not found", "not_found")
        payment = store.stored_payment(store.refunds[refund_id])
        refund = next(r for r in payment["refunds"] if r["id"] == refund_id)
        if refund["status"] != "in_process":
            raise ApiError(400, f"refund {refund_id} is already {refund['status']}")
        if status == "approved" and payment["status"] != "approved":
            raise ApiError(400, f"Payment with status {payment['status']} cannot be refunded")
        refund["status"] = status
        refund["date_last_updated"] = store.clock.stamp()
        if status == "approved":
            _apply(payment, dec(refund["amount"]))
        store.touch(payment)
        return copy.deepcopy(refund)


def _refundable(payment: dict[str, Any]) -> Decimal:
    """What is left to refund: refunds approved or still in process both hold their amount."""
    held = sum(
        (dec(r["amount"]) for r in payment["refunds"] if r["status"] in REFUND_STATUSES),
        Decimal(0),
    )
    return dec(payment["transaction_amount"]) - held


def _apply(payment: dict[str, Any], value: Decimal) -> None:
    """An approved refund of `value`: partially_refunded, or refunded once all is returned."""
    refunded = dec(payment["transaction_amount_refunded"]) + value
    payment["transaction_amount_refunded"] = num(refunded)
    if refunded >= dec(payment["transaction_amount"]):
        payment["status"] = payment["status_detail"] = "refunded"
    else:
        payment["status_detail"] = "partially_refunded"
