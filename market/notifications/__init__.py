"""Recording notifications and the inbox. Steps call `record` inside their own transaction (an
outbox): the `notifications.dispatch_pending` task later fans them out in batches."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from market import pagination
from market.errors import NotFoundError
from market.models.base import utcnow
from market.models.notifications import NOTIFICATION_KINDS, Notification

RECORDED = "notifications.recorded"


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
    new = session.execute(stmt).scalar_one_or_none() is not None
    if new:
        session.info[RECORDED] = True
    return new


def recorded_in(session: Session) -> bool:
    """Whether this session recorded a new notification (so its committer sends a dispatch)."""
    return bool(session.info.get(RECORDED))


def claim_undispatched(session: Session, *, limit: int = 500) -> list[Notification]:
    """Lock a batch of notifications not yet fanned out (concurrent dispatchers skip them)."""
    stmt = (
        select(Notification)
        .where(Notification.dispatched_at.is_(None))
        .order_by(Notification.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(stmt).scalars())


def user_notifications(
    session: Session,
    *,
    user_id: uuid.UUID,
    unread_only: bool,
    offset: int,
    limit: int,
    count_up_to: int | None = None,
) -> tuple[list[Notification], int]:
    """One page of the user's inbox, newest first, and the total it is a page of (counted no
    further than `count_up_to`; None: all)."""
    where = [Notification.user_id == user_id]
    if unread_only:
        where.append(Notification.read_at.is_(None))
    total = pagination.count_up_to(session, select(Notification.id).where(*where), count_up_to)
    rows = session.execute(
        select(Notification)
        .where(*where)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .offset(offset)
        .limit(limit)
    ).scalars()
    return list(rows), total


def user_notification(
    session: Session, *, user_id: uuid.UUID, notification_id: uuid.UUID
) -> Notification:
    """The user's notification; NotFoundError for a missing one or anybody else's."""
    row = session.execute(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError("no such notification")
    return row


def mark_read(session: Session, *, user_id: uuid.UUID, notification_id: uuid.UUID) -> Notification:
    """Mark one of the user's notifications read (idempotent: the first read time is kept)."""
    row = user_notification(session, user_id=user_id, notification_id=notification_id)
    if row.read_at is None:
        row.read_at = utcnow()
    return row


def mark_all_read(session: Session, *, user_id: uuid.UUID) -> int:
    """Mark every unread notification of the user read; returns how many changed (idempotent)."""
    result = session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
    )
    return result.rowcount or 0  # type: ignore[attr-defined]
