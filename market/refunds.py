"""Refunds at MercadoPago: asked by an admin, or automatic for a payment a purchase cannot
take (market/settlement.py). One refund per payment (unique), executed by a worker.

An admin refund takes the credits back when it is asked for, under the wallet's lock: a
refund that would take the balance below zero is refused (409) before MercadoPago is
called, and nothing can spend the credits while the refund is in flight. If MercadoPago
refuses it for good, the credits are given back by a new transaction.

Lock order: purchase (FOR UPDATE) → payment_refunds → wallet.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from market import ledger, notifications
from market.errors import ConflictError
from market.models import PaymentRefund, Purchase
from market.models.base import utcnow
from market.purchases import REVERSED, get_purchase
from market.settlement import Outcome, refund_of


def request_refund(
    session: Session, *, purchase_id: uuid.UUID, requested_by: uuid.UUID | None
) -> PaymentRefund:
    """Take the purchase's credits back and record a refund for the worker to ask for.

    The credits are taken now, under the wallet's lock, so a balance that would go below
    zero refuses the refund (409) before MercadoPago is called, and nothing can spend them
    while the refund is in flight. Asking again returns the refund in progress.
    """
    purchase = get_purchase(session, purchase_id, lock=True)
    if purchase.payment_id is not None:
        existing = refund_of(session, purchase.payment_id, lock=True)
        if existing is not None:
            if existing.status == "requested":
                return existing
            raise ConflictError(f"the refund of this purchase already {existing.status}")
    if purchase.status != "approved" or purchase.payment_id is None:
        raise ConflictError(
            f"only approved purchases can be refunded (this one is {purchase.status})"
        )
    refund = PaymentRefund(
        id=uuid.uuid4(),
        purchase_id=purchase.id,
        payment_id=purchase.payment_id,
        reason="admin",
        status="requested",
        amount=purchase.amount,
        credits=purchase.credits,
        requested_by=requested_by,
    )
    session.add(refund)
    session.flush()
    ledger.reverse(
        session,
        user_id=purchase.user_id,
        credits=purchase.credits,
        reference=f"refund:{refund.id}",
        kind="refund",
        purchase_id=purchase.id,
        description="Purchase refunded",
    )
    return refund


def refund_to_execute(
    session: Session, *, refund_id: uuid.UUID | None = None, payment_id: int | None = None
) -> tuple[PaymentRefund, Purchase] | None:
    """The refund still to ask MercadoPago for, with its purchase; None when nothing is left."""
    stmt = select(PaymentRefund)
    stmt = (
        stmt.where(PaymentRefund.id == refund_id)
        if refund_id
        else stmt.where(PaymentRefund.payment_id == payment_id)
    )
    refund = session.execute(stmt).scalar_one_or_none()
    if refund is None or refund.status != "requested":
        return None
    return refund, get_purchase(session, refund.purchase_id)


def refund_key(purchase: Purchase, refund: PaymentRefund) -> str:
    """MercadoPago's idempotency key for the refund: one refund per payment of the purchase."""
    return f"refund-{purchase.external_reference}-{refund.payment_id}"


def complete_refund(
    session: Session, *, refund_id: uuid.UUID, provider_refund_id: str | None
) -> Outcome:
    """Record that MercadoPago refunded the payment; notify the user (idempotent)."""
    refund = session.get(PaymentRefund, refund_id)
    assert refund is not None
    purchase = get_purchase(session, refund.purchase_id, lock=True)
    refund = refund_of(session, refund.payment_id, lock=True)
    assert refund is not None
    if refund.status == "requested":
        refund.status, refund.provider_refund_id = "succeeded", provider_refund_id
    if refund.reason == "admin" and purchase.status == "approved":
        purchase.status, purchase.reversed_at = "refunded", utcnow()
    notifications.record(
        session,
        user_id=purchase.user_id,
        kind="refund.issued",
        title="Your payment was refunded",
        body=(
            f"{purchase.credits} credits were taken back."
            if refund.reason == "admin"
            else "This payment could not be used for your purchase and was returned."
        ),
        dedupe_key=(
            f"purchase:{purchase.id}:refunded"
            if refund.reason == "admin"
            else f"refund:{refund.id}:issued"
        ),
        data={
            "purchase_id": str(purchase.id),
            "payment_id": refund.payment_id,
            "reason": refund.reason,
        },
    )
    return Outcome("refunded", purchase.id, purchase.user_id, purchase.status)


def fail_refund(
    session: Session, *, refund_id: uuid.UUID, error: str, payment_status: str | None
) -> Outcome:
    """MercadoPago refused the refund for good: give the reserved credits back (idempotent).

    If the payment is meanwhile refunded or charged back, the reversal stands.
    """
    refund = session.get(PaymentRefund, refund_id)
    assert refund is not None
    purchase = get_purchase(session, refund.purchase_id, lock=True)
    refund = refund_of(session, refund.payment_id, lock=True)
    assert refund is not None
    if payment_status in REVERSED:
        if refund.status == "requested":
            refund.status = "succeeded" if payment_status == "refunded" else "failed"
            refund.error = None if payment_status == "refunded" else error[:2000]
        if refund.reason == "admin" and purchase.status == "approved":
            purchase.status, purchase.reversed_at = payment_status, utcnow()
        return Outcome("reversed_at_provider", purchase.id, purchase.user_id, purchase.status)
    changed = False
    if refund.status == "requested":
        refund.status, refund.error = "failed", error[:2000]
        if refund.credits:
            ledger.restore(
                session,
                user_id=purchase.user_id,
                credits=refund.credits,
                reference=f"refund-void:{refund.id}",
                purchase_id=purchase.id,
                description="Refund refused by MercadoPago: credits restored",
            )
            changed = True
    return Outcome("refund_failed", purchase.id, purchase.user_id, purchase.status, changed)


def stale_refunds(
    session: Session, *, older_than: datetime, limit: int = 100
) -> list[PaymentRefund]:
    """Refunds still requested long after they were asked for (their job failed or was lost)."""
    stmt = (
        select(PaymentRefund)
        .where(PaymentRefund.status == "requested", PaymentRefund.updated_at < older_than)
        .order_by(PaymentRefund.updated_at)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())
