"""Recording notifications. Steps call `record` inside their own transaction (an outbox):
the `notifications.dispatch_pending` task later fans them out in batches."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market.models.notifications import NOTIFICATION_KINDS, Notification


def record(
    session: Session,
    *,
    user_id: uuid.UUID,
    kind: str,
    title: str,
    dedupe_key: str,
    body: str | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Add a notification to the user's inbox once per `dedupe_key`; True when it is new."""
    if kind not in NOTIFICATION_KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    stmt = (
        insert(Notification)
        .values(
            user_id=user_id,
            kind=kind,
            title=title,
            body=body,
            data=data or {},
            dedupe_key=dedupe_key,
        )
        .on_conflict_do_nothing(index_elements=[Notification.dedupe_key])
        .returning(Notification.id)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def claim_undispatched(session: Session, *, limit: int = 500) -> list[Notification]:
    """Lock a batch of notifications not yet fanned out (concurrent dispatchers skip them)."""
    from sqlalchemy import select

    stmt = (
        select(Notification)
        .where(Notification.dispatched_at.is_(None))
        .order_by(Notification.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(stmt).scalars())
