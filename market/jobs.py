"""Job records: the state of every workflow run and of each of its steps.

Lock order: the `jobs` row (FOR UPDATE) before its `job_steps` rows. States only move
forward: a job is queued → running → succeeded | failed | cancelled, and a finished job
never changes again, so a late or repeated step report is ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from market.errors import NotCancellableError, NotFoundError
from market.models import Job, JobStep
from market.models.base import utcnow
from market.models.jobs import FINISHED_JOB_STATES

ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class StepSpec:
    """One step of a workflow: the Celery task to send and its keyword arguments."""

    task_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    moves_money: bool = False

    @property
    def name(self) -> str:
        return self.task_name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class StepRun:
    """What a task learns when it starts: which job step it is, and whether to go on."""

    job_id: uuid.UUID
    position: int
    proceed: bool


def create_job(
    session: Session,
    *,
    kind: str,
    owner_id: uuid.UUID | None,
    steps: Sequence[StepSpec],
    subject: str | None = None,
) -> Job:
    """A queued job with its steps, each with a pre-assigned Celery task id (flushed)."""
    job = Job(kind=kind, owner_id=owner_id, subject=subject, state="queued")
    job.steps = [
        JobStep(
            position=i,
            name=spec.name,
            task_name=spec.task_name,
            kwargs=spec.kwargs,
            task_id=str(uuid.uuid4()),
            moves_money=spec.moves_money,
        )
        for i, spec in enumerate(steps)
    ]
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: uuid.UUID, *, lock: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id).options(selectinload(Job.steps))
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    job = session.execute(stmt).scalar_one_or_none()
    if job is None:
        raise NotFoundError("no such task")
    return job


def get_visible_job(
    session: Session, job_id: uuid.UUID, *, viewer_id: uuid.UUID, is_admin: bool
) -> Job:
    """The job if the viewer owns it or is an admin; else NotFoundError (existence is private)."""
    job = get_job(session, job_id)
    if not is_admin and job.owner_id != viewer_id:
        raise NotFoundError("no such task")
    return job


def list_active_jobs(
    session: Session, *, owner_id: uuid.UUID | None, limit: int = 100
) -> list[Job]:
    """Queued and running jobs, newest first; every owner's when `owner_id` is None."""
    stmt = (
        select(Job)
        .where(Job.state.in_(ACTIVE_STATES))
        .options(selectinload(Job.steps))
        .order_by(Job.created_at.desc())
        .limit(limit)
    )
    if owner_id is not None:
        stmt = stmt.where(Job.owner_id == owner_id)
    return list(session.execute(stmt).scalars())


def _step_by_task(session: Session, task_id: str) -> JobStep | None:
    return session.execute(select(JobStep).where(JobStep.task_id == task_id)).scalar_one_or_none()


def start_step(session: Session, *, task_id: str) -> StepRun | None:
    """Mark the step running; `proceed` is False when its job is already finished or cancelled."""
    step = _step_by_task(session, task_id)
    if step is None:
        return None
    job = get_job(session, step.job_id, lock=True)
    step = next(s for s in job.steps if s.task_id == task_id)
    now = utcnow()
    if job.state in FINISHED_JOB_STATES:
        return StepRun(job.id, step.position, proceed=False)
    if job.state == "queued":
        job.state, job.started_at = "running", now
    step.state = "running"
    step.attempts += 1
    step.started_at = step.started_at or now
    step.error = None
    job.updated_at = now
    return StepRun(job.id, step.position, proceed=True)


def finish_step(
    session: Session, *, task_id: str, result: dict[str, Any] | None = None
) -> Job | None:
    """Mark the step succeeded, merge its result into the job's; the last one finishes the job."""
    step = _step_by_task(session, task_id)
    if step is None:
        return None
    job = get_job(session, step.job_id, lock=True)
    if job.state in FINISHED_JOB_STATES:
        return job
    now = utcnow()
    step = next(s for s in job.steps if s.task_id == task_id)
    step.state, step.finished_at, step.error = "succeeded", now, None
    if result:
        job.result = {**(job.result or {}), **result}
    if all(s.state in ("succeeded", "skipped") for s in job.steps):
        job.state, job.finished_at = "succeeded", now
    job.updated_at = now
    return job


def fail_step(session: Session, *, task_id: str, error: str, retrying: bool = False) -> Job | None:
    """Record a step's error; unless it is retried, the job fails and later steps are skipped."""
    step = _step_by_task(session, task_id)
    if step is None:
        return None
    job = get_job(session, step.job_id, lock=True)
    if job.state in FINISHED_JOB_STATES:
        return job
    now = utcnow()
    step = next(s for s in job.steps if s.task_id == task_id)
    step.error = error[:2000]
    if not retrying:
        step.state, step.finished_at = "failed", now
        for later in job.steps:
            if later.state == "pending":
                later.state = "skipped"
        job.state, job.error, job.finished_at = "failed", error[:2000], now
    job.updated_at = now
    return job


def cancel_job(session: Session, job: Job) -> list[str]:
    """Cancel a queued or running job; returns the task ids to revoke.

    Refused (NotCancellableError) once the job is finished or a step that moves money
    has started: money is never left half-moved.
    """
    if job.state in FINISHED_JOB_STATES:
        raise NotCancellableError(f"the task is already {job.state}")
    if any(s.moves_money and s.state != "pending" for s in job.steps):
        raise NotCancellableError("a step that moves money has already started")
    now = utcnow()
    to_revoke = []
    for step in job.steps:
        if step.state in ("pending", "running"):
            to_revoke.append(step.task_id)
            step.state, step.finished_at = "cancelled", now
    job.state, job.finished_at, job.updated_at = "cancelled", now, now
    return to_revoke


def stale_queued_jobs(session: Session, *, older_than: datetime, limit: int = 100) -> list[Job]:
    """Jobs still queued, untouched since `older_than`: their first message was lost."""
    stmt = (
        select(Job)
        .where(Job.state == "queued", Job.updated_at < older_than)
        .options(selectinload(Job.steps))
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(stmt).scalars())


def touch_job(session: Session, job_id: uuid.UUID) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))
