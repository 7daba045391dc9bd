"""Refunds at MercadoPago: asked by an admin, or automatic for a payment a purchase cannot
take (settlement.py). One refund per payment (unique), executed by a worker; its states are
in states.py, and it is final only when MercadoPago's refund itself says so.

An admin refund takes the credits back when it is asked for, under the wallet's lock: a
refund that would take the balance below zero is refused (409) before MercadoPago is
called, and nothing can spend the credits while the refund is in flight. If MercadoPago
refuses it for good (at once, or later: a refund `in_process` then `rejected`), the credits
are given back by a new transaction.

Lock order: purchase (FOR UPDATE) → payment_refunds → wallet.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import ledger, notifications
from market.db import locked
from market.errors import ConflictError
from market.models import MercadoPagoPayment, PaymentRefund, Purchase
from market.payments import states
from market.payments.outcome import Outcome
from market.payments.purchases import get_purchase

log = logging.getLogger(__name__)

OPEN = ("requested", "in_process")
# A refund object's own status at MercadoPago, and what it means for ours.
FINAL = {"approved": "succeeded", "rejected": "failed", "cancelled": "failed"}


def refund_of(session: Session, payment_id: int, *, lock: bool = False) -> PaymentRefund | None:
    """The refund of the payment, if one was ever asked for."""
    stmt = select(PaymentRefund).where(PaymentRefund.payment_id == payment_id)
    stmt = locked(stmt, lock)
    return session.execute(stmt).scalar_one_or_none()


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
            if existing.status in OPEN:
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


def request_auto_refund(
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


def settle_auto_refund(refund: PaymentRefund) -> None:
    """The payment is refunded at MercadoPago: an open refund of it has succeeded."""
    if refund.status in OPEN:
        states.move_refund(refund, "succeeded")


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


def _locked(session: Session, refund_id: uuid.UUID) -> tuple[PaymentRefund, Purchase]:
    refund = session.get(PaymentRefund, refund_id)
    assert refund is not None
    purchase = get_purchase(session, refund.purchase_id, lock=True)
    refund = refund_of(session, refund.payment_id, lock=True)
    assert refund is not None
    return refund, purchase


def record_answer(
    session: Session, *, refund_id: uuid.UUID, provider_refund_id: str | None, status: str | None
) -> Outcome:
    """Record MercadoPago's answer to the refund: final when the refund's own status is
    (approved, rejected, cancelled), `in_process` until then (idempotent)."""
    final = FINAL.get(status or "approved")
    if final == "succeeded":
        return complete_refund(session, refund_id=refund_id, provider_refund_id=provider_refund_id)
    if final == "failed":
        return fail_refund(
            session,
            refund_id=refund_id,
            error=f"refund {status} at MercadoPago",
            payment_status=None,
        )
    refund, purchase = _locked(session, refund_id)
    if refund.status == "requested":
        states.move_refund(refund, "in_process")
        refund.provider_refund_id = provider_refund_id
    return Outcome("refund_in_process", purchase.id, purchase.user_id, purchase.status)


def complete_refund(
    session: Session, *, refund_id: uuid.UUID, provider_refund_id: str | None
) -> Outcome:
    """Record that MercadoPago refunded the payment; notify the user (idempotent)."""
    refund, purchase = _locked(session, refund_id)
    if refund.status in OPEN:
        states.move_refund(refund, "succeeded")
        refund.provider_refund_id = provider_refund_id or refund.provider_refund_id
    if refund.reason == "admin" and purchase.status == "approved":
        states.move_purchase(
            session, purchase, "refunded", reason="admin_refund", payment_id=refund.payment_id
        )
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
    refund, purchase = _locked(session, refund_id)
    if payment_status in ("refunded", "charged_back"):
        if refund.status in OPEN:
            states.move_refund(
                refund,
                "succeeded" if payment_status == "refunded" else "failed",
                error=None if payment_status == "refunded" else error,
            )
        if refund.reason == "admin" and purchase.status == "approved":
            states.move_purchase(
                session,
                purchase,
                payment_status,
                reason=payment_status,
                payment_id=refund.payment_id,
            )
        return Outcome("reversed_at_provider", purchase.id, purchase.user_id, purchase.status)
    changed = _void(session, refund, purchase, error)
    return Outcome("refund_failed", purchase.id, purchase.user_id, purchase.status, changed)


def _void(session: Session, refund: PaymentRefund, purchase: Purchase, error: str) -> bool:
    """Fail an open refund and give back the credits it reserved; whether any were."""
    if refund.status not in OPEN:
        return False
    states.move_refund(refund, "failed", error=error)
    if not refund.credits:
        return False
    ledger.restore(
        session,
        user_id=purchase.user_id,
        credits=refund.credits,
        reference=f"refund-void:{refund.id}",
        purchase_id=purchase.id,
        description="Refund refused by MercadoPago: credits restored",
    )
    return True


def sync_with_payment(
    session: Session, refund: PaymentRefund, payment: MercadoPagoPayment, purchase: Purchase
) -> bool:
    """Follow an open refund's own status in the payment's `refunds`: a refund MercadoPago
    finally rejected or cancelled fails here, its credits given back. Whether it did."""
    if refund.status != "in_process" or not refund.provider_refund_id:
        return False
    for answer in (payment.data or {}).get("refunds") or []:
        mine = str(answer.get("id")) == refund.provider_refund_id
        if mine and FINAL.get(str(answer.get("status"))) == "failed":
            return _void(session, refund, purchase, f"refund {answer['status']} at MercadoPago")
    return False


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
