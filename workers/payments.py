"""Tasks of the `payments` queue: preferences, settlement of payments, refunds.

Every task is idempotent: state lives in the database (unique references, states that only
move forward, row locks), so a redelivered or repeated message changes nothing more.
Transient provider errors are retried by StepTask with backoff and a bound; any other
provider error fails the job once, with MercadoPago's message.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from market import purchases, refunds, settlement
from market.errors import ProviderError, ProviderTransientError
from market.mercadopago import MercadoPagoGateway
from market.models import MercadoPagoNotification
from market.models.base import utcnow
from workers import runtime
from workers.app import app
from workers.base import StepTask

log = logging.getLogger(__name__)


def gateway() -> MercadoPagoGateway:
    return purchases.gateway_for(runtime.settings())


def invalidate_balance(user_id: uuid.UUID | None) -> None:
    """Drop the cached balance (call after the commit that changed it)."""
    if user_id is not None:
        runtime.cache().invalidate("balance", str(user_id))


@app.task(base=StepTask, name="payments.create_preference")
def create_preference(*, purchase_id: str) -> dict[str, Any]:
    """Create the purchase's Checkout Pro preference once (MercadoPago idempotency key)."""
    settings = runtime.settings()
    with runtime.transaction() as session:
        purchase = purchases.get_purchase(session, uuid.UUID(purchase_id))
        if purchase.preference_id is not None:
            return purchases.checkout(purchase, settings)
        body = purchases.preference_body(purchase, settings)
        key = purchase.external_reference
    # No transaction is held across the provider call.
    preference = gateway().create_preference(body, idempotency_key=key)
    with runtime.transaction() as session:
        purchase = purchases.save_preference(
            session, purchase_id=uuid.UUID(purchase_id), preference=preference
        )
        return purchases.checkout(purchase, settings)


def fetch(payment_id: int) -> dict[str, Any]:
    """Ask MercadoPago for the payment and record its answer."""
    payment = gateway().get_payment(payment_id)
    with runtime.transaction() as session:
        settlement.record_payment(session, payment)
    return payment


def apply(payment_id: int, notification_id: str | None = None) -> settlement.Outcome:
    """Apply the recorded payment; mark the inbox row processed in the same transaction."""
    with runtime.transaction() as session:
        outcome = settlement.apply_payment(session, payment_id=payment_id)
        if notification_id:
            row = session.get(MercadoPagoNotification, uuid.UUID(notification_id))
            if row is not None and row.processed_at is None:
                row.processed_at = utcnow()
    if outcome.balance_changed:
        invalidate_balance(outcome.user_id)
    return outcome


def execute_refund(
    *, refund_id: uuid.UUID | None = None, payment_id: int | None = None
) -> dict[str, Any]:
    """Ask MercadoPago for a requested refund and record the answer (idempotent)."""
    with runtime.transaction() as session:
        found = refunds.refund_to_execute(session, refund_id=refund_id, payment_id=payment_id)
        if found is None:
            return {"refund": None}
        refund, purchase = found
        rid, pid, key = refund.id, refund.payment_id, refunds.refund_key(purchase, refund)
    try:
        answer = gateway().refund_payment(pid, amount=None, idempotency_key=key)
    except ProviderTransientError:
        raise
    except ProviderError as exc:
        try:
            status = gateway().get_payment(pid).get("status")
        except ProviderError:
            status = None
        if status == "refunded":
            # Refunded meanwhile (e.g. from MercadoPago's panel): the refund is done.
            answer = {}
        else:
            with runtime.transaction() as session:
                outcome = refunds.fail_refund(
                    session, refund_id=rid, error=str(exc.detail), payment_status=status
                )
            if outcome.balance_changed:
                invalidate_balance(outcome.user_id)
            if outcome.effect == "reversed_at_provider":
                return {"refund": str(rid), "refund_status": status}
            raise
    with runtime.transaction() as session:
        refunds.complete_refund(
            session,
            refund_id=rid,
            provider_refund_id=str(answer["id"]) if answer.get("id") else None,
        )
    return {"refund": str(rid), "refund_status": "succeeded"}


@app.task(base=StepTask, name="payments.fetch_payment")
def fetch_payment(*, payment_id: str, notification_id: str | None = None) -> dict[str, Any]:
    """Record MercadoPago's answer for the payment (safe to repeat: the newest answer wins)."""
    payment = fetch(int(payment_id))
    return {"payment_id": str(payment["id"]), "payment_status": payment.get("status")}


@app.task(base=StepTask, name="payments.apply_payment")
def apply_payment(*, payment_id: str, notification_id: str | None = None) -> dict[str, Any]:
    """Credit, fail or reverse the purchase as the recorded payment says (once)."""
    return apply(int(payment_id), notification_id).as_result()


@app.task(base=StepTask, name="payments.refund_payment")
def refund_payment(
    *, refund_id: str | None = None, payment_id: str | None = None
) -> dict[str, Any]:
    """Refund at MercadoPago the refund requested (by id, or for the payment), if any."""
    return execute_refund(
        refund_id=uuid.UUID(refund_id) if refund_id else None,
        payment_id=int(payment_id) if payment_id else None,
    )


def settle(payment: dict[str, Any]) -> settlement.Outcome:
    """Record a payment already fetched (e.g. by a search), apply it, run its refund.

    For maintenance tasks, which cannot start workflows; the same steps as settlement.
    """
    with runtime.transaction() as session:
        settlement.record_payment(session, payment)
    outcome = apply(int(payment["id"]))
    if outcome.refund_id is not None:
        try:
            execute_refund(refund_id=outcome.refund_id)
        except ProviderError as exc:
            log.warning("refund of payment %s failed: %s", payment["id"], exc)
    return outcome
