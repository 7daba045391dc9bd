"""Settlement of a MercadoPago payment: fetch_payment → apply_payment (→ refund_payment).

The one place that knows this order. Whoever starts it (a payment event, a merchant order or
chargeback resolved to its payments, a reconciliation or expiry sweep, a stale event claimed
again), a settlement is a job with these steps, owned by the purchase's buyer as soon as the
purchase is known (fetch_payment adopts the job when the payment names it).

fetch_payment records what MercadoPago says of the payment (the truth, not the webhook); a
sweep that has just read the payment from a search records it itself and starts the job
without that step. apply_payment credits, fails or reverses the purchase once. Only when a
refund is due (a payment the purchase cannot take, or a refund requested earlier and never
executed) does apply_payment add `payments.refund_payment` to the job, in its own
transaction, and append it to the running chain after its commit (workers/payments.py
`refund_step`). Each step commits once, its step record included (workers/base.py
`step_transaction`); a step that recorded a notification sends `notifications.dispatch_pending`
after its commit, so the chain carries no notify step (beat's dispatch is the safety net).
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market import job_plans, jobs
from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "credits.settlement"


def subject(payment_id: int) -> str:
    return f"mercadopago-payment:{payment_id}"


def settlement_steps(
    payment_id: int, event_id: uuid.UUID | None = None, fetched: bool = False
) -> list[StepSpec]:
    """The steps of a settlement job. `fetched`: the caller has just recorded the payment as
    MercadoPago answered it, so there is nothing to fetch."""
    kwargs = {"payment_id": str(payment_id)}
    if event_id is not None:
        kwargs["event_id"] = str(event_id)
    steps = [] if fetched else [StepSpec("payments.fetch_payment", kwargs)]
    steps.append(StepSpec("payments.apply_payment", kwargs, moves_money=True))
    return steps


def plan_settlement(payment_id: int, *, event_id: uuid.UUID) -> job_plans.PlannedJob:
    """A settlement started by a payment event, its ids chosen before it is written (the
    webhook writes it in the statement that stores the event)."""
    return job_plans.plan_job(
        kind=KIND, subject=subject(payment_id), steps=settlement_steps(payment_id, event_id)
    )


def start_settlement(
    session: Session,
    *,
    payment_id: int,
    owner_id: uuid.UUID | None,
    event_id: uuid.UUID | None = None,
    fetched: bool = False,
) -> Job:
    """Record the job; its steps are sent once the caller commits (e.g. the event row).

    `fetched`: the caller has just recorded the payment as MercadoPago answered it.
    """
    steps = settlement_steps(payment_id, event_id, fetched)
    return start(session, kind=KIND, owner_id=owner_id, subject=subject(payment_id), steps=steps)


def settle_once(
    session: Session, *, payment_id: int, owner_id: uuid.UUID | None, fetched: bool = False
) -> Job | None:
    """Start a settlement of the payment unless one that has not applied it yet is queued or
    running (sweeps): that one applies what was just recorded."""
    waiting = jobs.job_before_step(
        session, kind=KIND, subject=subject(payment_id), step="apply_payment"
    )
    if waiting is not None:
        return None
    return start_settlement(session, payment_id=payment_id, owner_id=owner_id, fetched=fetched)
