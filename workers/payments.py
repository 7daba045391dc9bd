"""Tasks of the `payments` queue: preferences, settlement of payments, refunds.

Every task is idempotent: state lives in the database (unique references, states that only
move forward, row locks), so a redelivered or repeated message changes nothing more.
Transient provider errors are retried by StepTask with backoff and a bound; any other
provider error fails the job once, with MercadoPago's message. The order of the steps is
workflows/settlement.py's.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from market import jobs
from market.errors import ProviderError, ProviderTransientError
from market.jobs import StepSpec
from market.payments import purchases, refunds, settlement
from market.payments.mercadopago import events
from market.payments.mercadopago.client import MercadoPagoGateway
from market.payments.outcome import Outcome
from workers import runtime
from workers.app import app
from workers.base import StepTask, hold_step, skip_if_done, step_transaction

log = logging.getLogger(__name__)

# What recording MercadoPago's answer did, as the job's result says it.
REFUND_STATUS = {"refunded": "succeeded", "refund_in_process": "in_process"}
REFUND_TASK = "payments.refund_payment"


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


def execute_refund(
    *, refund_id: uuid.UUID | None = None, payment_id: int | None = None
) -> dict[str, Any]:
    """Ask MercadoPago for a requested refund and record its answer (idempotent).

    The refund is read before the provider call in a transaction that writes nothing, unless
    the step is the first of its job to move money (an admin refund): then it is marked
    running there, so the job cannot be cancelled once MercadoPago may have been asked.
    Its answer is recorded with the step, in one transaction.
    """
    with runtime.transaction() as session:
        hold_step(session)
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
        if status != "refunded":
            with step_transaction() as work:
                outcome = refunds.fail_refund(
                    work.session, refund_id=rid, error=str(exc.detail), payment_status=status
                )
                work.record = outcome.effect == "reversed_at_provider"
                work.result = {"refund": str(rid), "refund_status": status}
            invalidate(outcome)
            if work.record:
                return work.result
            raise
        # Refunded meanwhile (e.g. from MercadoPago's panel): the refund is done.
        answer = {"status": "approved"}
    with step_transaction() as work:
        outcome = refunds.record_answer(
            work.session,
            refund_id=rid,
            provider_refund_id=str(answer["id"]) if answer.get("id") else None,
            status=answer.get("status"),
        )
        work.record = outcome.effect != "refund_failed"
        if work.record:
            work.result = {"refund": str(rid), "refund_status": REFUND_STATUS[outcome.effect]}
    invalidate(outcome)
    if not work.record:
        raise ProviderError(f"MercadoPago refused refund {rid} ({answer.get('status')})")
    return work.result or {}


def invalidate(outcome: Outcome) -> None:
    if outcome.balance_changed:
        invalidate_balance(outcome.user_id)


# The settlement steps: each commits once, its step recorded with its work (workers/base.py
# `step_transaction`); nothing reads their Celery results (the job row is the record).
@app.task(base=StepTask, name="payments.fetch_payment", one_commit=True, ignore_result=True)
def fetch_payment(
    *,
    payment_id: str,
    event_id: str | None = None,
    notification_id: str | None = None,
) -> dict[str, Any]:
    """Record MercadoPago's answer for the payment (safe to repeat: the newest answer wins),
    and give the job to the purchase's buyer once the payment names the purchase.

    `notification_id` is `event_id`'s name in messages sent before the rename.
    """
    skip_if_done()
    payment = gateway().get_payment(int(payment_id))
    with step_transaction() as work:
        settlement.record_payment(work.session, payment)
        purchase = settlement.purchase_of_payment(work.session, int(payment_id))
        if purchase is not None and work.job is not None:
            jobs.adopt(work.job, purchase.user_id)
        work.result = {"payment_id": str(payment["id"]), "payment_status": payment.get("status")}
    return work.result


def refund_step(refund_id: uuid.UUID) -> StepSpec:
    """The step a settlement gets when applying its payment asks for a refund."""
    return StepSpec(REFUND_TASK, {"refund_id": str(refund_id)}, moves_money=True)


@app.task(base=StepTask, name="payments.apply_payment", one_commit=True, ignore_result=True)
def apply_payment(
    *, payment_id: str, event_id: str | None = None, notification_id: str | None = None
) -> dict[str, Any]:
    """Credit, fail or reverse the purchase as the recorded payment says (once); mark the
    payment event that asked for it processed in the same transaction. A refund due (of a
    payment the purchase cannot take, or one requested earlier and not executed yet) becomes
    the job's next step, added in this same transaction."""
    event = event_id or notification_id
    with step_transaction() as work:
        outcome = settlement.apply_payment(work.session, payment_id=int(payment_id))
        if event:
            events.mark_processed(work.session, event_id=uuid.UUID(event))
        if outcome.refund_id is not None:
            work.add_step(refund_step(outcome.refund_id))
        work.result = outcome.as_result()
    invalidate(outcome)
    return work.result


@app.task(base=StepTask, name=REFUND_TASK, one_commit=True, ignore_result=True)
def refund_payment(
    *, refund_id: str | None = None, payment_id: str | None = None
) -> dict[str, Any]:
    """Refund at MercadoPago the refund requested (by id, or for the payment), if any."""
    return execute_refund(
        refund_id=uuid.UUID(refund_id) if refund_id else None,
        payment_id=int(payment_id) if payment_id else None,
    )
