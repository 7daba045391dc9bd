"""Chargebacks: a dispute opened by the buyer's card issuer on an approved payment.

The payment turns `charged_back` with the dispute's stage as `status_detail`: `in_process`
(opened), `settled` (the buyer won: the money is gone) or `reimbursed` (the seller won and
has the money back). One chargeback per payment; a later call moves the same one.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.mercadopago.common import ApiError
from sandbox.mercadopago.state import Store

DETAILS = ("in_process", "settled", "reimbursed")


def charge_back(store: Store, payment_id: int, detail: str) -> tuple[dict[str, Any], str]:
    """Open the payment's chargeback or move it to `detail`; returns it and the action
    (`chargeback.created` or `chargeback.updated`) MercadoPago notifies."""
    if detail not in DETAILS:
        raise ApiError(400, f"status_detail must be one of {', '.join(DETAILS)}")
    with store.lock:
        payment = store.stored_payment(payment_id)
        found = next((c for c in store.chargebacks.values() if payment_id in c["payments"]), None)
        now = store.clock.stamp()
        if found is None:
            if payment["status"] != "approved":
                raise ApiError(400, "only an approved payment can be charged back")
            found = {
                "id": str(next(store.chargeback_ids)),
                "payments": [payment_id],
                "currency": payment["currency_id"],
                "amount": payment["transaction_amount"],
                "coverage_applied": False,
                "coverage_eligible": False,
                "documentation_required": detail == "in_process",
                "documentation_status": "pending" if detail == "in_process" else "not_supplied",
                "live_mode": False,
                "date_created": now,
                "date_last_updated": now,
                # The stage the sandbox played last; the payment's status_detail carries it too.
                "status_detail": detail,
            }
            store.chargebacks[found["id"]] = found
            action = "chargeback.created"
        elif found["status_detail"] == detail:
            raise ApiError(400, f"the chargeback is already {detail}")
        else:
            found["status_detail"] = detail
            found["date_last_updated"] = now
            action = "chargeback.updated"
        payment["status"], payment["status_detail"] = "charged_back", detail
        store.touch(payment)
        return copy.deepcopy(found), action


def chargeback(store: Store, chargeback_id: str) -> dict[str, Any]:
    """The chargeback, or a 404."""
    with store.lock:
        if chargeback_id not in store.chargebacks:
            raise ApiError(404, f"chargeback {chargeback_id} not found", "not_found")
        return copy.deepcopy(store.chargebacks[chargeback_id])


def search(store: Store, payment_id: str | None) -> list[dict[str, Any]]:
    """The chargebacks, of one payment when `payment_id` is given, oldest first."""
    with store.lock:
        return [
            copy.deepcopy(c)
            for c in store.chargebacks.values()
            if payment_id is None or payment_id in {str(p) for p in c["payments"]}
        ]
