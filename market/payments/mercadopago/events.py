"""The inbox of MercadoPago's payment events: the only code that writes `payment_events`.

Every notification form we accept (webhook, legacy IPN, merchant order, chargeback) is
stored once: copies and replays carry the same signed parts, hence the same dedupe key, and
collapse onto the first row. The row is tied to the job that acts on it, marked processed
when that job has applied what MercadoPago says, and claimed again by the sweep when it was
not processed in time (a lost message, a job that failed for good).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.job_plans import PlannedJob, insert_planned, planned_params
from market.models import PaymentEvent
from market.models.base import utcnow
from market.payments.mercadopago.client import MercadoPagoGateway
from market.payments.settlement import owner_of_payment

# The topics we act on. A payment names itself; the others name what to ask for its payments.
PAYMENT, MERCHANT_ORDER, CHARGEBACK = "payment", "merchant_order", "topic_chargebacks_wh"
TOPICS = (PAYMENT, MERCHANT_ORDER, CHARGEBACK)

# What PostgreSQL's columns take; the web handler has already refused anything longer.
_KEY, _KIND, _ID, _REQUEST = 200, 64, 64, 128


@dataclass(frozen=True)
class StaleEvent:
    """An event claimed again by the sweep, what it names, and the job last started for it."""

    id: uuid.UUID
    kind: str
    data_id: str
    payment_id: int | None
    job_id: uuid.UUID | None


def store(
    *,
    event_id: uuid.UUID,
    dedupe_key: str,
    kind: str,
    data_id: str,
    payment_id: int | None,
    action: str | None = None,
    request_id: str | None = None,
    signed_at: datetime | None = None,
    notification_id: int | None = None,
    body: dict[str, Any] | None = None,
    processed: bool = False,
    job: PlannedJob | None = None,
    owned_by_payment: bool = False,
) -> tuple[Select[tuple[uuid.UUID]], dict[str, Any]]:
    """The ONE statement (and its parameters) that records an event (`processed`: one we do
    not act on, kept for the record) and, only if it is new, the `job` that acts on it with
    its steps, owned by the buyer of `payment_id` when `owned_by_payment`: the web handler's
    only write.

    Its row is `event_id` when the event is new, none for a duplicate (then nothing is
    written). Safe to send twice: sent again after its answer was lost, it finds its own
    row (the same `event_id`) and answers as the first try would have. The event row names
    the job from the start, so a job whose message is lost is found by both sweeps (stale
    queued jobs, stale events)."""
    params = {
        "event_id": event_id,
        "event_dedupe_key": dedupe_key[:_KEY],
        "event_notification_id": notification_id,
        "event_type": kind[:_KIND],
        "event_action": (action or "")[:_KIND] or None,
        "event_data_id": data_id[:_ID],
        "event_payment_id": payment_id,
        "event_request_id": (request_id or "")[:_REQUEST] or None,
        "event_signed_at": signed_at,
        "event_body": body or {},
        "event_job_id": job.id if job is not None else None,
        "event_processed_at": utcnow() if processed else None,
        "event_received_at": utcnow(),
    }
    if job is not None:
        params.update(planned_params(job))
    return _statement(job is not None, owned_by_payment), params


@functools.cache
def _statement(with_job: bool, owned_by_payment: bool) -> Select[tuple[uuid.UUID]]:
    """Built once per shape, every value a bind parameter: compiled once by SQLAlchemy, and
    prepared by psycopg on a connection that repeats it."""
    columns = PaymentEvent.__table__.c
    values = {
        name: bindparam(f"event_{name}", type_=columns[name].type)
        for name in (
            "dedupe_key",
            "notification_id",
            "type",
            "action",
            "data_id",
            "payment_id",
            "request_id",
            "signed_at",
            "body",
            "job_id",
            "processed_at",
            "received_at",
        )
    }
    event = (
        insert(PaymentEvent)
        .values(id=bindparam("event_id", type_=columns["id"].type), attempts=1, **values)
        .on_conflict_do_nothing(index_elements=[PaymentEvent.dedupe_key])
        .returning(PaymentEvent.id)
        .cte("stored_event")
    )
    # Data-modifying CTEs all run, referenced or not; the job's rows exist only if the event
    # row was inserted, and the foreign key event → job is checked at the statement's end.
    owner = owner_of_payment(values["payment_id"]) if owned_by_payment else None
    job_rows = insert_planned(when=event, owner=owner) if with_job else ()
    # The statement's snapshot does not see what its own CTEs insert: this finds the row
    # only when an earlier try of the same statement committed it.
    earlier = select(PaymentEvent.id).where(
        PaymentEvent.id == bindparam("event_id", type_=columns["id"].type)
    )
    return select(event.c.id).add_cte(*job_rows).union_all(earlier)


def dedupe_key(*, x_signature: str, x_request_id: str | None, data_id: str | None) -> str:
    """The key of a notification: its signed parts only (the `ts` and `v1` of the header,
    the request id and the query's data.id), so a copy, a retry keeping its `ts`, or a
    replay with other body fields is the same event."""
    signed = "\n".join((x_signature.strip().lower(), x_request_id or "", data_id or ""))
    return "sig:" + hashlib.sha256(signed.encode()).hexdigest()


def payments_named(gateway: MercadoPagoGateway, *, kind: str, data_id: str) -> list[int]:
    """The payments an event names indirectly: a merchant order's, or a chargeback's."""
    if kind == MERCHANT_ORDER:
        found = gateway.get_merchant_order(data_id).get("payments") or []
    elif kind == CHARGEBACK:
        found = gateway.get_chargeback(data_id).get("payments") or []
    else:
        return []
    ids = [item.get("id") if isinstance(item, dict) else item for item in found]
    return sorted({int(i) for i in ids if str(i).isascii() and str(i).isdigit()})


def attach_job(session: Session, *, event_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Remember which job acts on the event (one UPDATE: the web handler counts round trips)."""
    session.execute(update(PaymentEvent).where(PaymentEvent.id == event_id).values(job_id=job_id))


def mark_processed(session: Session, *, event_id: uuid.UUID) -> bool:
    """Mark the event processed (idempotent); whether this call did it."""
    done = session.execute(
        update(PaymentEvent)
        .where(PaymentEvent.id == event_id, PaymentEvent.processed_at.is_(None))
        .values(processed_at=utcnow())
        .returning(PaymentEvent.id)
    ).first()
    return done is not None


def claim_stale(
    session: Session, *, older_than: datetime, max_attempts: int, limit: int
) -> list[StaleEvent]:
    """Claim the events not processed since `older_than` (and not claimed since), counting
    the attempt. Rows another sweep holds are skipped, so two sweeps split the work."""
    rows = session.execute(
        select(PaymentEvent)
        .where(
            PaymentEvent.processed_at.is_(None),
            PaymentEvent.received_at < older_than,
            PaymentEvent.attempts < max_attempts,
            or_(PaymentEvent.requeued_at.is_(None), PaymentEvent.requeued_at < older_than),
        )
        .order_by(PaymentEvent.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    claimed = []
    now = utcnow()
    for row in rows:
        row.attempts += 1
        row.requeued_at = now
        claimed.append(StaleEvent(row.id, row.type, row.data_id, row.payment_id, row.job_id))
    return claimed
