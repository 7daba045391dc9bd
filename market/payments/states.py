"""The state machines of purchases and refunds: one table each, the only way a status changes.

A purchase's every change is also a row of `purchase_transitions`: its timeline (from, to,
when, why, which payment). A change the table does not allow raises IllegalTransitionError;
callers check the current state first where a repeat is expected (a redelivered payment), so
the error means a bug or a race the row locks should have prevented.

Purchases:
    pending → approved | rejected | cancelled | expired
    rejected → approved            (the buyer tried another card on the same checkout)
    approved → refunded | charged_back | partially_refunded
    partially_refunded → partially_refunded | refunded | charged_back
    charged_back → approved | partially_refunded   (reimbursed: the seller won the dispute)

Refunds:
    requested → in_process | succeeded | failed
    in_process → succeeded | failed
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.errors import ConflictError
from market.models import PaymentRefund, Purchase, PurchaseTransition
from market.models.base import utcnow

PURCHASE_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"pending"}),
    "pending": frozenset({"approved", "rejected", "cancelled", "expired"}),
    "rejected": frozenset({"approved"}),
    "approved": frozenset({"refunded", "charged_back", "partially_refunded"}),
    "partially_refunded": frozenset({"partially_refunded", "refunded", "charged_back"}),
    "charged_back": frozenset({"approved", "partially_refunded"}),
    "cancelled": frozenset(),
    "expired": frozenset(),
    "refunded": frozenset(),
}

REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"in_process", "succeeded", "failed"}),
    "in_process": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
}

# Purchases that may still take a payment, and those whose credits were given.
CREDITABLE = ("pending", "rejected")
CREDITED = ("approved", "partially_refunded")


class IllegalTransitionError(ConflictError):
    slug, title = "illegal-transition", "The change of state is not allowed"


def can_move_purchase(current: str | None, to: str) -> bool:
    return to in PURCHASE_TRANSITIONS.get(current, frozenset())


def start_purchase(session: Session, purchase: Purchase) -> None:
    """Begin the purchase's timeline (call once, when the pending purchase is created)."""
    _record(session, purchase, None, purchase.status, "created", None)


def move_purchase(
    session: Session,
    purchase: Purchase,
    to: str,
    *,
    reason: str,
    payment_id: int | None = None,
    detail: str | None = None,
) -> None:
    """Move the purchase (held under its row lock by the caller) to `to`, and record it."""
    current = purchase.status
    if not can_move_purchase(current, to):
        raise IllegalTransitionError(f"purchase {purchase.id}: {current} → {to} ({reason})")
    now = utcnow()
    purchase.status = to
    if detail is not None:
        purchase.status_detail = detail
    if to == "approved":
        purchase.approved_at = purchase.approved_at or now
        purchase.settled_at = now
    elif current in CREDITABLE:
        purchase.settled_at = now
    elif to in ("refunded", "charged_back"):
        purchase.reversed_at = now
    _record(session, purchase, current, to, reason, payment_id)


def _record(
    session: Session,
    purchase: Purchase,
    current: str | None,
    to: str,
    reason: str,
    payment_id: int | None,
) -> None:
    session.add(
        PurchaseTransition(
            purchase_id=purchase.id,
            from_status=current,
            to_status=to,
            reason=reason[:64],
            payment_id=payment_id,
        )
    )


def timeline(session: Session, purchase_id: object) -> list[PurchaseTransition]:
    """The purchase's changes of state, oldest first."""
    stmt = (
        select(PurchaseTransition)
        .where(PurchaseTransition.purchase_id == purchase_id)
        .order_by(PurchaseTransition.id)
    )
    return list(session.execute(stmt).scalars())


def times_moved_to(session: Session, purchase: Purchase, status: str) -> int:
    """How many times the purchase has entered `status` (its timeline's count)."""
    stmt = (
        select(func.count())
        .select_from(PurchaseTransition)
        .where(
            PurchaseTransition.purchase_id == purchase.id, PurchaseTransition.to_status == status
        )
    )
    return session.execute(stmt).scalar_one()


def move_refund(refund: PaymentRefund, to: str, *, error: str | None = None) -> None:
    """Move the refund (held under its row lock by the caller) to `to`."""
    if to not in REFUND_TRANSITIONS.get(refund.status, frozenset()):
        raise IllegalTransitionError(f"refund {refund.id}: {refund.status} → {to}")
    refund.status = to
    if error is not None:
        refund.error = error[:2000]
