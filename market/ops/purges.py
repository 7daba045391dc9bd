"""Purges of records past their retention, one bounded batch per call (safe to rerun).

Each function deletes at most `limit` rows chosen with FOR UPDATE SKIP LOCKED (two purges at
once share the work instead of waiting on each other) and returns what it removed; callers
commit each batch in its own transaction, so a long purge never holds locks for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from market.models import (
    IdempotencyKey,
    Job,
    JobStep,
    LedgerTransaction,
    MercadoPagoPayment,
    Notification,
    PaymentEvent,
    PaymentRefund,
    Purchase,
)
from market.models.jobs import FINISHED_JOB_STATES
from market.outbound import sending


@dataclass
class Batch:
    deleted: int = 0
    # Celery task ids of the deleted job steps: their results are forgotten too.
    task_ids: list[str] = field(default_factory=list)


def finished_jobs(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete finished jobs (and their steps) that finished before `before`."""
    ids = list(
        session.execute(
            select(Job.id)
            .where(Job.state.in_(FINISHED_JOB_STATES), Job.finished_at < before)
            .order_by(Job.finished_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not ids:
        return Batch()
    task_ids = list(
        session.execute(select(JobStep.task_id).where(JobStep.job_id.in_(ids))).scalars()
    )
    session.execute(delete(JobStep).where(JobStep.job_id.in_(ids)))
    session.execute(delete(Job).where(Job.id.in_(ids)))
    return Batch(len(ids), task_ids)


def read_notifications(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete notifications read (and already fanned out) before `before`."""
    ids = select(Notification.id).where(
        Notification.read_at < before, Notification.dispatched_at.is_not(None)
    )
    return _delete_ids(session, Notification, ids.order_by(Notification.read_at), limit)


def processed_payment_events(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete MercadoPago payment events processed before `before` (unprocessed ones stay for
    the sweep that starts them again). A redelivery of a purged event is stored and applied
    again, which changes nothing: settlement is idempotent."""
    ids = select(PaymentEvent.id).where(PaymentEvent.processed_at < before)
    return _delete_ids(session, PaymentEvent, ids.order_by(PaymentEvent.processed_at), limit)


def finished_deliveries(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete outgoing webhook deliveries (and their attempts) finished before `before`."""
    return Batch(sending.purge_finished_deliveries(session, before=before, limit=limit))


def idempotency_keys(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete idempotency keys created before `before`: past their lifetime, the same key
    is a new request (as with Stripe's 24 hours). The work they answered is untouched."""
    keys = session.execute(
        select(IdempotencyKey.user_id, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < before)
        .order_by(IdempotencyKey.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if keys:
        session.execute(
            delete(IdempotencyKey).where(
                tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_([tuple(k) for k in keys])
            )
        )
    return Batch(len(keys))


def expired_purchases(session: Session, *, before: datetime, limit: int) -> Batch:
    """Delete purchases that expired (checkout abandoned) before `before` and never moved
    money: no credited payment, no ledger transaction, no refund, and no payment MercadoPago
    ever reported for them. Any of those keeps the purchase for the record (and the foreign
    keys of the ledger and refunds would refuse the delete anyway)."""
    ids = select(Purchase.id).where(
        Purchase.status == "expired",
        Purchase.settled_at < before,
        Purchase.payment_id.is_(None),
        ~select(LedgerTransaction.id).where(LedgerTransaction.purchase_id == Purchase.id).exists(),
        ~select(PaymentRefund.id).where(PaymentRefund.purchase_id == Purchase.id).exists(),
        ~select(MercadoPagoPayment.id)
        .where(MercadoPagoPayment.external_reference == Purchase.external_reference)
        .exists(),
    )
    return _delete_ids(session, Purchase, ids.order_by(Purchase.settled_at), limit)


def _delete_ids(session: Session, model: type, ids_query, limit: int) -> Batch:  # type: ignore[no-untyped-def]
    ids = list(session.execute(ids_query.limit(limit).with_for_update(skip_locked=True)).scalars())
    if ids:
        session.execute(delete(model).where(model.id.in_(ids)))  # type: ignore[attr-defined]
    return Batch(len(ids))
