"""Purges of records past their retention, one bounded batch per call (safe to rerun).

Each function deletes at most `limit` rows chosen with FOR UPDATE SKIP LOCKED (two purges at
once share the work instead of waiting on each other) and returns what it removed; callers
commit each batch in its own transaction, so a long purge never holds locks for long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from market.models import Job, JobStep, Notification
from market.models.jobs import FINISHED_JOB_STATES


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


def _delete_ids(session: Session, model: type, ids_query, limit: int) -> Batch:  # type: ignore[no-untyped-def]
    ids = list(session.execute(ids_query.limit(limit).with_for_update(skip_locked=True)).scalars())
    if ids:
        session.execute(delete(model).where(model.id.in_(ids)))  # type: ignore[attr-defined]
    return Batch(len(ids))
