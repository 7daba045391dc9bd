"""A MercadoPago payment event becomes settlements: the workflow-side task that resolves one.

A payment event names its payment: its settlement starts at once (web handler, or the sweep
claiming a stale event). A merchant order or a chargeback names its payments only through
MercadoPago: the job `credits.payment_event` runs `payments.resolve_payment_event`, which
asks MercadoPago for them, starts one settlement per payment, and marks the event processed.
The task lives here, not in workers/, because it starts workflows (workers may not).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from market.job_plans import PlannedJob, plan_job
from market.jobs import StepSpec
from market.models import Job, PaymentEvent
from market.payments import settlement
from market.payments.mercadopago import events
from workers import runtime
from workers.app import app
from workers.base import StepTask, step_transaction
from workers.payments import gateway
from workflows.base import start
from workflows.settlement import plan_settlement, start_settlement

KIND = "credits.payment_event"


def plan_for_event(*, event_id: uuid.UUID, kind: str, data_id: str) -> tuple[PlannedJob, bool]:
    """The job a new event starts, and whether the buyer of the event's payment owns it (a
    payment event: the owner is found in the statement that stores the event, NULL while
    the payment is unknown; fetch_payment adopts the job then)."""
    if kind == events.PAYMENT:
        return plan_settlement(int(data_id), event_id=event_id), True
    return plan_job(kind=KIND, subject=f"payment-event:{event_id}", steps=_resolve(event_id)), False


def _resolve(event_id: uuid.UUID) -> list[StepSpec]:
    return [StepSpec("payments.resolve_payment_event", {"event_id": str(event_id)})]


def start_for_event(session: Session, *, event_id: uuid.UUID, kind: str, data_id: str) -> Job:
    """Start what the stored event asks for; sent once the caller commits."""
    if kind == events.PAYMENT:
        payment_id = int(data_id)
        purchase = settlement.purchase_of_payment(session, payment_id)
        return start_settlement(
            session,
            payment_id=payment_id,
            owner_id=purchase.user_id if purchase else None,
            event_id=event_id,
        )
    return start(
        session,
        kind=KIND,
        owner_id=None,
        subject=f"payment-event:{event_id}",
        steps=_resolve(event_id),
    )


@app.task(base=StepTask, name="payments.resolve_payment_event", one_commit=True, ignore_result=True)
def resolve_payment_event(*, event_id: str) -> dict[str, Any]:
    """Ask MercadoPago which payments a merchant order or chargeback names, and start a
    settlement of each (once: a repeat finds the event processed).

    The event is read before the provider call in a transaction that writes nothing; the
    settlements, the event marked processed and this step are one commit.
    """
    with runtime.transaction() as session:
        event = session.get(PaymentEvent, uuid.UUID(event_id))
        if event is None or event.processed_at is not None:
            return {"payments": []}
        kind, data_id = event.type, event.data_id
    # No transaction is held across the provider call.
    found = events.payments_named(gateway(), kind=kind, data_id=data_id)
    with step_transaction() as work:
        work.result = {"payments": []}
        if events.mark_processed(work.session, event_id=uuid.UUID(event_id)):
            for payment_id in found:
                purchase = settlement.purchase_of_payment(work.session, payment_id)
                start_settlement(
                    work.session,
                    payment_id=payment_id,
                    owner_id=purchase.user_id if purchase else None,
                )
            work.result = {"payments": [str(p) for p in found]}
    return work.result
