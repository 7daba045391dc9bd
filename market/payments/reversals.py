"""Money going back after a purchase was credited: refunds (whole or partial) and chargebacks
made at MercadoPago, and a chargeback the seller won (reimbursed) giving the credits back.

Called by settlement under the purchase's row lock. Each ledger movement has a reference
naming the payment and the level it reaches, so a repeat posts nothing.

A dispute the seller won can be reopened (the issuer's second chargeback, arbitration): each
round of a dispute takes and gives back under references of its own (`…:charged_back:100:2`,
`…:reimbursed:2` for the second), so a new round is not mistaken for a repeat of the first.

Partial refunds: the credits taken back are `floor(credits * refunded / amount)`, in the
buyer's favour: a refund of 10.01 of 10.00 ARS * 100 credits takes 100; a refund of 0.05
takes 0. Each further refund takes the difference to the new level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy.orm import Session

from market import ledger, notifications
from market.models import MercadoPagoPayment, PaymentRefund, Purchase
from market.payments import states
from market.payments.outcome import Outcome

log = logging.getLogger(__name__)

MakeOutcome = Callable[..., Outcome]


def credits_for_refund(purchase: Purchase, refunded: Decimal) -> int:
    """The credits a refund of `refunded` (of the purchase's amount) takes back, rounded down."""
    if refunded <= 0:
        return 0
    if refunded >= purchase.amount:
        return purchase.credits
    share = Decimal(purchase.credits) * refunded / purchase.amount
    return int(share.to_integral_value(rounding=ROUND_FLOOR))


def refunded_amount(payment: MercadoPagoPayment) -> Decimal:
    """What MercadoPago says has been refunded of the payment (approved refunds only)."""
    data = payment.data or {}
    total = data.get("transaction_amount_refunded")
    if total is not None:
        return Decimal(str(total))
    refunds = [r for r in data.get("refunds") or [] if r.get("status", "approved") == "approved"]
    return sum((Decimal(str(r.get("amount") or 0)) for r in refunds), Decimal(0))


def take_back(
    session: Session,
    purchase: Purchase,
    payment: MercadoPagoPayment,
    *,
    level: int,
    kind: str,
    tag: str,
    dispute: int = 1,
) -> int:
    """Take back credits until `level` of them are gone (once per level, and per round of a
    dispute for a chargeback); what was taken.

    A chargeback leaves `refunded_credits` at the level refunds had reached: should the
    seller win the dispute, that is where the purchase goes back to."""
    due = level - purchase.refunded_credits
    if due <= 0:
        return 0
    _, taken = ledger.reverse(
        session,
        user_id=purchase.user_id,
        credits=due,
        reference=_round(f"mercadopago:payment:{payment.id}:{tag}:{level}", dispute),
        kind=kind,
        purchase_id=purchase.id,
        description=f"Purchase {tag.replace('_', ' ')} at MercadoPago",
        partial=True,
    )
    if tag != "charged_back":
        purchase.refunded_credits = level
    purchase.unrecovered_credits += due - taken
    if due > taken:
        log.warning("purchase %s %s: %d credits already spent", purchase.id, tag, due - taken)
    return taken


def partial_refund(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, outcome: MakeOutcome
) -> Outcome:
    """An approved payment partly refunded in MercadoPago's panel: take back its share."""
    level = credits_for_refund(purchase, refunded_amount(payment))
    if level <= purchase.refunded_credits:
        return outcome("already_reversed")
    taken = take_back(session, purchase, payment, level=level, kind="refund", tag="refunded")
    to = "refunded" if level >= purchase.credits else "partially_refunded"
    states.move_purchase(
        session,
        purchase,
        to,
        reason="partial_refund" if to == "partially_refunded" else "refund",
        payment_id=payment.id,
        detail=payment.status_detail,
    )
    _notify(session, purchase, f"{to}:{level}", f"{level} of your credits were taken back.")
    return outcome("partially_reversed", balance_changed=taken > 0)


def reverse(
    session: Session,
    purchase: Purchase,
    payment: MercadoPagoPayment,
    refund: PaymentRefund | None,
    outcome: MakeOutcome,
) -> Outcome:
    """The credited payment was refunded or charged back at MercadoPago."""
    status = payment.status
    taken = 0
    # A chargeback's round of its dispute: the first, or a dispute reopened after a win.
    dispute = (
        1 + states.times_moved_to(session, purchase, status) if status == "charged_back" else 1
    )
    if refund is not None and refund.reason == "admin" and refund.status != "failed":
        # The admin refund took the credits back when it was asked for.
        if status == "refunded" and refund.status in ("requested", "in_process"):
            states.move_refund(refund, "succeeded")
    else:
        # From MercadoPago's panel, or a chargeback: the money is gone whatever the wallet
        # holds, so take back what is left and record the rest as unrecovered.
        taken = take_back(
            session,
            purchase,
            payment,
            level=purchase.credits,
            kind="chargeback" if status == "charged_back" else "refund",
            tag=status,
            dispute=dispute,
        )
    states.move_purchase(
        session,
        purchase,
        status,
        reason=status,
        payment_id=payment.id,
        detail=payment.status_detail,
    )
    title = (
        "Your purchase was refunded" if status == "refunded" else "Your payment was charged back"
    )
    _notify(
        session,
        purchase,
        _round(status, dispute),
        f"{purchase.credits} credits were taken back.",
        title,
    )
    return outcome("reversed", balance_changed=taken > 0)


def reimburse(
    session: Session, purchase: Purchase, payment: MercadoPagoPayment, outcome: MakeOutcome
) -> Outcome:
    """A chargeback the seller won: give back what this round's chargeback took, once."""
    dispute = states.times_moved_to(session, purchase, "charged_back")  # this one included
    posting = ledger.find(
        session,
        _round(f"mercadopago:payment:{payment.id}:charged_back:{purchase.credits}", dispute),
    )
    taken = -posting.user_delta if posting is not None else 0
    if taken:
        ledger.restore(
            session,
            user_id=purchase.user_id,
            credits=taken,
            reference=_round(f"mercadopago:payment:{payment.id}:reimbursed", dispute),
            purchase_id=purchase.id,
            description="Chargeback reimbursed: credits restored",
        )
    # What the chargeback could not take is no longer owed either.
    lost = purchase.credits - purchase.refunded_credits  # what the chargeback meant to take
    purchase.unrecovered_credits = max(0, purchase.unrecovered_credits - (lost - taken))
    # A partial refund MercadoPago made that we had not applied yet still takes its share.
    level = credits_for_refund(purchase, refunded_amount(payment))
    if level > purchase.refunded_credits:
        take_back(session, purchase, payment, level=level, kind="refund", tag="refunded")
    states.move_purchase(
        session,
        purchase,
        "partially_refunded" if purchase.refunded_credits else "approved",
        reason="chargeback_reimbursed",
        payment_id=payment.id,
        detail=payment.status_detail,
    )
    _notify(
        session,
        purchase,
        _round("reimbursed", dispute),
        f"{taken} credits were given back.",
        "Dispute won",
    )
    return outcome("restored", balance_changed=taken > 0)


def _round(name: str, dispute: int) -> str:
    """A reference or key of a dispute's round: the first keeps the plain name."""
    return name if dispute <= 1 else f"{name}:{dispute}"


def _notify(
    session: Session, purchase: Purchase, what: str, body: str, title: str | None = None
) -> Any:
    return notifications.record(
        session,
        user_id=purchase.user_id,
        kind="refund.issued",
        title=title or "Part of your purchase was refunded",
        body=body,
        dedupe_key=f"purchase:{purchase.id}:{what}",
        data={"purchase_id": str(purchase.id), "status": purchase.status},
    )
