"""Settling MercadoPago payments: record what the provider says, then apply it once.

What decides is the payment as MercadoPago answers it (GET /v1/payments/{id} or a search),
recorded in `mercadopago_payments`, never a notification body. `apply_payment` moves the
purchase through its state machine (states.py) under its row lock:

| MercadoPago says                          | the purchase                                   |
|-------------------------------------------|------------------------------------------------|
| approved (a payment it can take)          | credited once per payment id → approved        |
| approved (paid twice, expired, mismatch)  | an automatic refund of that payment is queued  |
| approved / partially_refunded             | its share of credits taken back (reversals.py) |
| pending, in_process, authorized, in_mediation | nothing yet                                |
| rejected, cancelled                       | a pending purchase fails; the buyer is told    |
| refunded                                  | what is left of the credits is taken back      |
| charged_back / in_process or settled      | what is left of the credits is taken back      |
| charged_back / reimbursed                 | what the chargeback took is given back, once   |

A payment is credited only if its amount and its currency are exactly the purchase's: a
missing `currency_id` is a mismatch, refunded automatically.

Lock order: purchase (FOR UPDATE) → mercadopago_payments row → payment_refunds → wallet.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from market import ledger, notifications
from market.db import locked
from market.errors import NotFoundError
from market.models import MercadoPagoPayment, PaymentRefund, Purchase
from market.models.base import utcnow
from market.payments import refunds, reversals, states
from market.payments.outcome import Outcome
from market.payments.refunds import refund_of
from market.payments.states import CREDITABLE, CREDITED

log = logging.getLogger(__name__)

IN_FLIGHT = ("pending", "in_process", "authorized", "in_mediation")
REVERSED = ("refunded", "charged_back")

__all__ = ["MercadoPagoPayment", "Outcome", "apply_payment", "record_payment", "refund_of"]


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _money(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None


def record_payment(session: Session, payment: dict[str, Any]) -> int:
    """Store the payment MercadoPago answered; an older answer never replaces a newer one."""
    payment_id = int(payment["id"])
    values = {
        "id": payment_id,
        "external_reference": payment.get("external_reference"),
        "status": str(payment.get("status")),
        "status_detail": payment.get("status_detail"),
        "amount": _money(payment.get("transaction_amount")),
        "currency": payment.get("currency_id"),
        "date_last_updated": _parse_time(payment.get("date_last_updated")),
        "data": payment,
        "fetched_at": utcnow(),
    }
    stmt = insert(MercadoPagoPayment).values(values)
    # Two fetches racing (one before a change, one after) may commit in either order.
    newer = or_(
        MercadoPagoPayment.date_last_updated.is_(None),
        stmt.excluded.date_last_updated.is_(None),
        stmt.excluded.date_last_updated >= MercadoPagoPayment.date_last_updated,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[MercadoPagoPayment.id],
            set_={k: stmt.excluded[k] for k in values if k != "id"},
            where=newer,
        )
    )
    return payment_id


def purchase_of_payment(session: Session, payment_id: int) -> Purchase | None:
    """The purchase a payment belongs to, if we have seen that payment."""
    ref = select(MercadoPagoPayment.external_reference).where(MercadoPagoPayment.id == payment_id)
    return (
        session.execute(
            select(Purchase).where(
                or_(
                    Purchase.payment_id == payment_id,
                    Purchase.external_reference == ref.scalar_subquery(),
                )
            )
        )
        .scalars()
        .first()
    )


def owner_of_payment(payment_id: int | ColumnElement[Any]) -> ScalarSelect[Any]:
    """The buyer of the purchase a payment belongs to, as a scalar subquery (NULL while the
    payment is unknown), for a statement that records a job beside something else;
    `payment_id` may be a bind parameter of that statement."""
    ref = select(MercadoPagoPayment.external_reference).where(MercadoPagoPayment.id == payment_id)
    return (
        select(Purchase.user_id)
        .where(
            or_(
                Purchase.payment_id == payment_id,
                Purchase.external_reference == ref.scalar_subquery(),
            )
        )
        .limit(1)
        .scalar_subquery()
    )


def apply_payment(session: Session, *, payment_id: int) -> Outcome:
    """Bring the purchase in line with the recorded payment (idempotent)."""
    ref = session.execute(
        select(MercadoPagoPayment.external_reference).where(MercadoPagoPayment.id == payment_id)
    ).scalar_one_or_none()
    purchase = None
    if ref:
        purchase = session.execute(
            locked(select(Purchase).where(Purchase.external_reference == ref))
        ).scalar_one_or_none()
    # Read after the purchase lock: the latest answer any fetch has committed.
    payment = session.execute(
        locked(select(MercadoPagoPayment).where(MercadoPagoPayment.id == payment_id))
    ).scalar_one_or_none()
    if payment is None:
        raise NotFoundError(f"payment {payment_id} was never fetched")
    if purchase is None:
        log.warning("payment %s (reference %r) matches no purchase", payment_id, ref)
        outcome = Outcome("unknown_purchase")
    else:
        outcome = _apply(session, purchase, payment)
    payment.applied_status, payment.applied_at = payment.status, utcnow()
    payment.applied_updated = payment.date_last_updated
    return outcome


def is_settled(session: Session, payment_id: int) -> bool:
    """Whether the recorded payment's latest answer has been applied (a sweep skips it)."""
    row = session.get(MercadoPagoPayment, payment_id, populate_existing=True)
    return (
        row is not None
        and row.applied_status == row.status
        and row.applied_updated == row.date_last_updated
        and row.applied_at is not None
    )


def _apply(session: Session, purchase: Purchase, payment: MercadoPagoPayment) -> Outcome:
    refund = refund_of(session, payment.id, lock=True)
    outcome = _decide(session, purchase, payment, refund)
    if outcome.refund_id is None and refund is not None and refund.status == "requested":
        # Asked for earlier and never executed (its job failed or its message was lost): the
        # caller runs it now, whatever this application did.
        outcome = replace(outcome, refund_id=refund.id)
    return outcome


def _decide(
    session: Session,
    purchase: Purchase,
    payment: MercadoPagoPayment,
    refund: PaymentRefund | None,
) -> Outcome:
    status, pid = payment.status, payment.id
    mine = purchase.payment_id == pid

    def outcome(effect: str, **extra: Any) -> Outcome:
        return Outcome(effect, purchase.id, purchase.user_id, purchase.status, **extra)

    if refund is not None and refunds.sync_with_payment(session, refund, payment, purchase):
        return outcome("refund_failed", balance_changed=bool(refund.credits))
    admin_refund = refund is not None and refund.reason == "admin" and refund.status != "failed"
    # Refunded in part (in MercadoPago's panel) while the credits are still the buyer's.
    partly = (
        mine
        and purchase.status in CREDITED
        and not admin_refund
        and reversals.refunded_amount(payment) > 0
    )
    if status == "approved":
        if not mine:
            return _take(session, purchase, payment, outcome)
        if partly:
            return reversals.partial_refund(session, purchase, payment, outcome)
        return outcome("already_credited")
    if status in ("rejected", "cancelled"):
        return _fail(session, purchase, payment, outcome)
    if status == "charged_back" and payment.status_detail == "reimbursed":
        if mine and purchase.status == "charged_back":
            return reversals.reimburse(session, purchase, payment, outcome)
        # Won before we saw the chargeback: nothing was taken, nothing to give back; a
        # partial refund made before it still takes its share.
        if partly:
            return reversals.partial_refund(session, purchase, payment, outcome)
        return outcome("ignored")
    if status in REVERSED:
        if mine and purchase.status in CREDITED:
            return reversals.reverse(session, purchase, payment, refund, outcome)
        if refund is not None and status == "refunded":
            refunds.settle_auto_refund(refund)
        return outcome("ignored")
    return outcome("in_flight" if status in IN_FLIGHT else "ignored")


def _take(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, outcome: Any
) -> Outcome:
    """An approved payment the purchase has not taken: credit it, or refund it."""
    reason = _cannot_take(purchase, payment)
    if reason is None:
        _credit(session, purchase, payment)
        return outcome("credited", balance_changed=True)
    refund_id = refunds.request_auto_refund(session, purchase, payment, reason)
    return outcome("refund_requested" if refund_id else "already_refunded", refund_id=refund_id)


def _cannot_take(purchase: Purchase, payment: MercadoPagoPayment) -> str | None:
    """Why the purchase cannot be credited with this approved payment (None: it can)."""
    if purchase.payment_id is not None:
        return "already_paid"
    if purchase.status not in CREDITABLE:
        return f"purchase_{purchase.status}"
    # Exactly the purchase's amount and currency: a payment naming no currency is not one.
    if payment.amount != purchase.amount or payment.currency != purchase.currency:
        log.error(
            "payment %s paid %s %s for purchase %s of %s %s",
            payment.id,
            payment.amount,
            payment.currency,
            purchase.id,
            purchase.amount,
            purchase.currency,
        )
        return "amount_mismatch"
    return None


def _credit(session: Session, purchase: Purchase, payment: MercadoPagoPayment) -> None:
    posting = ledger.credit_sale(
        session,
        user_id=purchase.user_id,
        credits=purchase.credits,
        reference=f"mercadopago:payment:{payment.id}",
        purchase_id=purchase.id,
        description=f"Purchase of {purchase.credits} credits",
    )
    purchase.payment_id, purchase.credit_transaction_id = payment.id, posting.transaction_id
    states.move_purchase(
        session,
        purchase,
        "approved",
        reason="payment_approved",
        payment_id=payment.id,
        detail=payment.status_detail,
    )
    notifications.record(
        session,
        user_id=purchase.user_id,
        kind="credits.purchase_approved",
        title=f"{purchase.credits} credits added",
        body=f"Your payment of {purchase.amount} {purchase.currency} was approved.",
        dedupe_key=f"purchase:{purchase.id}:approved",
        data={
            "purchase_id": str(purchase.id),
            "credits": purchase.credits,
            "payment_id": payment.id,
        },
    )


def _fail(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, outcome: Any
) -> Outcome:
    """A rejected or cancelled payment: a purchase still waiting for one fails (once)."""
    status, pid = payment.status, payment.id
    if purchase.status not in CREDITABLE or purchase.payment_id is not None:
        return outcome("ignored")
    if purchase.status == "pending":
        states.move_purchase(
            session,
            purchase,
            status,
            reason=f"payment_{status}",
            payment_id=pid,
            detail=payment.status_detail,
        )
    else:
        purchase.status_detail = payment.status_detail
    new = notifications.record(
        session,
        user_id=purchase.user_id,
        kind="payment.failed",
        title="Your payment did not go through",
        body=f"MercadoPago answered {status} ({payment.status_detail}).",
        dedupe_key=f"purchase:{purchase.id}:failed:{pid}",
        data={"purchase_id": str(purchase.id), "payment_id": pid, "status": status},
    )
    return outcome("failed" if new else "already_failed")
