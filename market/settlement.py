"""Settling MercadoPago payments: record what the provider says, then apply it once.

What decides is the payment as MercadoPago answers it (GET /v1/payments/{id} or a search),
recorded in `mercadopago_payments`, never a webhook body. `apply_payment` moves the purchase
forward under its row lock: an approved payment credits the ledger once per payment id;
rejected or cancelled fails a pending purchase; refunded or charged_back reverses it; an
approved payment the purchase cannot take is queued for an automatic refund.

Lock order: purchase (FOR UPDATE) → mercadopago_payments row → payment_refunds → wallet.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import ledger, notifications
from market.errors import NotFoundError
from market.models import MercadoPagoPayment, PaymentRefund, Purchase
from market.models.base import utcnow
from market.purchases import CREDITABLE, IN_FLIGHT, REVERSED

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Outcome:
    """What applying a payment did."""

    effect: str
    purchase_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    purchase_status: str | None = None
    balance_changed: bool = False
    refund_id: uuid.UUID | None = None

    @property
    def changed(self) -> bool:
        """Whether this application changed anything (a repeat changes nothing)."""
        return self.effect in ("credited", "failed", "reversed", "refund_requested")

    def as_result(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "purchase_id": str(self.purchase_id) if self.purchase_id else None,
            "purchase_status": self.purchase_status,
        }


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


def apply_payment(session: Session, *, payment_id: int) -> Outcome:
    """Bring the purchase in line with the recorded payment (idempotent, forward only)."""
    ref = session.execute(
        select(MercadoPagoPayment.external_reference).where(MercadoPagoPayment.id == payment_id)
    ).scalar_one_or_none()
    purchase = None
    if ref:
        purchase = session.execute(
            select(Purchase)
            .where(Purchase.external_reference == ref)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
    # Read after the purchase lock: the latest answer any fetch has committed.
    payment = session.execute(
        select(MercadoPagoPayment)
        .where(MercadoPagoPayment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if payment is None:
        raise NotFoundError(f"payment {payment_id} was never fetched")
    if purchase is None:
        log.warning("payment %s (reference %r) matches no purchase", payment_id, ref)
        outcome = Outcome("unknown_purchase")
    else:
        outcome = _apply(session, purchase, payment)
    payment.applied_status, payment.applied_at = payment.status, utcnow()
    return outcome


def _apply(session: Session, purchase: Purchase, payment: MercadoPagoPayment) -> Outcome:
    status, pid = payment.status, payment.id
    mine = purchase.payment_id == pid

    def outcome(effect: str, **extra: Any) -> Outcome:
        return Outcome(effect, purchase.id, purchase.user_id, purchase.status, **extra)

    if status == "approved":
        if mine:
            return outcome("already_credited")
        reason = _cannot_take(purchase, payment)
        if reason is None:
            _credit(session, purchase, payment)
            return outcome("credited", balance_changed=True)
        refund_id = _auto_refund(session, purchase, payment, reason)
        return outcome("refund_requested" if refund_id else "already_refunded", refund_id=refund_id)
    if status in ("rejected", "cancelled"):
        if purchase.status in CREDITABLE and purchase.payment_id is None:
            if purchase.status == "pending":
                purchase.status = status
                purchase.settled_at = utcnow()
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
        return outcome("ignored")
    if status in REVERSED:
        if mine and purchase.status == "approved":
            return _reverse(session, purchase, payment, outcome)
        _settle_auto_refund(session, pid, status)
        return outcome("ignored")
    return outcome("in_flight" if status in IN_FLIGHT else "ignored")


def _cannot_take(purchase: Purchase, payment: MercadoPagoPayment) -> str | None:
    """Why the purchase cannot be credited with this approved payment (None: it can)."""
    if purchase.payment_id is not None:
        return "already_paid"
    if purchase.status not in CREDITABLE:
        return f"purchase_{purchase.status}"
    if payment.amount != purchase.amount or (payment.currency or purchase.currency) != (
        purchase.currency
    ):
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
    now = utcnow()
    purchase.status, purchase.status_detail = "approved", payment.status_detail
    purchase.payment_id, purchase.credit_transaction_id = payment.id, posting.transaction_id
    purchase.approved_at = purchase.settled_at = now
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


def _reverse(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, outcome: Any
) -> Outcome:
    """The credited payment was refunded or charged back at MercadoPago."""
    status = payment.status
    refund = refund_of(session, payment.id)
    changed = False
    if refund is not None and refund.reason == "admin" and refund.status != "failed":
        # The admin refund took the credits back when it was asked for.
        if status == "refunded" and refund.status == "requested":
            refund.status = "succeeded"
    else:
        # Refunded from MercadoPago's panel, or a chargeback: the money is gone whatever the
        # wallet holds, so take back what is left and record the rest.
        _, taken = ledger.reverse(
            session,
            user_id=purchase.user_id,
            credits=purchase.credits,
            reference=f"mercadopago:payment:{payment.id}:{status}",
            kind="chargeback" if status == "charged_back" else "refund",
            purchase_id=purchase.id,
            description=f"Purchase {status.replace('_', ' ')} at MercadoPago",
            partial=True,
        )
        purchase.unrecovered_credits = purchase.credits - taken
        changed = taken > 0
        if purchase.unrecovered_credits:
            log.warning(
                "purchase %s %s: %d credits already spent",
                purchase.id,
                status,
                purchase.unrecovered_credits,
            )
    purchase.status, purchase.status_detail = status, payment.status_detail
    purchase.reversed_at = utcnow()
    notifications.record(
        session,
        user_id=purchase.user_id,
        kind="refund.issued",
        title="Your purchase was refunded"
        if status == "refunded"
        else "Your payment was charged back",
        body=f"{purchase.credits} credits were taken back.",
        dedupe_key=f"purchase:{purchase.id}:{status}",
        data={"purchase_id": str(purchase.id), "status": status},
    )
    return outcome("reversed", balance_changed=changed)


# Automatic refunds --------------------------------------------------------------------------


def refund_of(session: Session, payment_id: int, *, lock: bool = False) -> PaymentRefund | None:
    stmt = select(PaymentRefund).where(PaymentRefund.payment_id == payment_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.execute(stmt).scalar_one_or_none()


def _auto_refund(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, reason: str
) -> uuid.UUID | None:
    """Ask for a refund of a payment the purchase cannot take (one per payment); the id of
    the refund still to execute, None when it was asked for before and is settled."""
    session.execute(
        insert(PaymentRefund)
        .values(
            id=uuid.uuid4(),
            purchase_id=purchase.id,
            payment_id=payment.id,
            reason=reason,
            status="requested",
            amount=payment.amount,
            credits=0,
        )
        .on_conflict_do_nothing(index_elements=[PaymentRefund.payment_id])
    )
    refund = refund_of(session, payment.id)
    assert refund is not None
    if refund.status != "requested":
        return None
    log.warning("payment %s of purchase %s will be refunded: %s", payment.id, purchase.id, reason)
    return refund.id


def _settle_auto_refund(session: Session, payment_id: int, status: str) -> None:
    refund = refund_of(session, payment_id, lock=True)
    if refund is not None and refund.status == "requested" and status == "refunded":
        refund.status = "succeeded"
