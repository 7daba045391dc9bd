"""Job records: the state of every workflow run and of each of its steps.

Lock order: the `jobs` row (FOR UPDATE) before its `job_steps` rows, and before any row a
step's own work locks (a one-commit step, workers/base.py `step_transaction`, locks its job
first, does its work, and records its start and end in that same transaction). States only
move forward: a job is queued → running → succeeded | failed | cancelled, and a finished
job never changes again, so a late or repeated step report is ignored. A one-commit step
goes from pending to succeeded in one commit; it is never seen running.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.orm import Session, selectinload

from market.db import locked
from market.errors import MarketError, NotCancellableError, NotFoundError
from market.models import Job, JobStep
from market.models.base import utcnow
from market.models.jobs import FINISHED_JOB_STATES

ACTIVE_STATES = ("queued", "running")
# What users see of a failure is short; the details are kept whole for logs and admins.
MESSAGE_CHARS = 300
DETAIL_CHARS = 2000


@dataclass(frozen=True)
class Failure:
    """Why a step failed: a stable `code` and a `message` safe to show the job's owner, and the
    `detail` (exception text, provider answers, addresses) for logs and admins only."""

    code: str
    message: str
    detail: str

    @property
    def retrying(self) -> Failure:
        """The same failure, as recorded while the step waits for another try."""
        return Failure(self.code, f"Retrying: {self.message}", f"retrying: {self.detail}")


def failure_of(exc: BaseException) -> Failure:
    """Describe `exc` for the job record.

    A domain error below 500 speaks to the user (it is what the API would answer in a
    problem's `detail`); a provider or dependency failure shows only its fixed title, and
    anything else is an internal error whose text never reaches the user.
    """
    text = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    detail = f"{type(exc).__name__}: {text}"[:DETAIL_CHARS]
    if isinstance(exc, MarketError):
        message = exc.detail if exc.status < 500 else exc.title
        return Failure(exc.slug, message[:MESSAGE_CHARS], detail)
    return Failure(
        "internal-error", "The step failed because of an internal error; it was logged.", detail
    )


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
    stmt = locked(stmt, lock)
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


def lock_job_unless_busy(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job locked (FOR UPDATE SKIP LOCKED); None while a step holds it (committing its
    work right now: the job is moving) or when it is gone."""
    stmt = (
        select(Job)
        .where(Job.id == job_id)
        .options(selectinload(Job.steps))
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return session.execute(stmt).scalar_one_or_none()


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
    """Mark the step running; `proceed` is False when its job is already finished or cancelled,
    or the step itself already succeeded (a job sent again after a lost message repeats its
    finished steps only as no-ops, and the chain goes on to the next one)."""
    step = _step_by_task(session, task_id)
    if step is None:
        return None
    job = get_job(session, step.job_id, lock=True)
    step = next(s for s in job.steps if s.task_id == task_id)
    now = utcnow()
    if not may_proceed(job, step):
        return StepRun(job.id, step.position, proceed=False)
    mark_running(job, step, started_at=now)
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
    step = next(s for s in job.steps if s.task_id == task_id)
    _succeed(job, step, result, utcnow())
    return job


def lock_step(session: Session, *, task_id: str) -> tuple[Job, JobStep] | None:
    """The job of step `task_id` locked (FOR UPDATE) with its steps, and that step; None when
    no job has that step. One statement for the lock, one for the steps."""
    stmt = (
        select(Job)
        .join(JobStep, JobStep.job_id == Job.id)
        .where(JobStep.task_id == task_id)
        .options(selectinload(Job.steps))
        .with_for_update(of=Job)
        .execution_options(populate_existing=True)
    )
    job = session.execute(stmt).scalar_one_or_none()
    if job is None:
        return None
    return job, next(s for s in job.steps if s.task_id == task_id)


def step_states(session: Session, *, task_id: str) -> tuple[str, str] | None:
    """(job state, step state) of step `task_id`, unlocked; None when no job has that step."""
    stmt = (
        select(Job.state, JobStep.state)
        .join(JobStep, JobStep.job_id == Job.id)
        .where(JobStep.task_id == task_id)
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def may_proceed(job: Job, step: JobStep) -> bool:
    """Whether the step may do its work: its job is not finished or cancelled, and the step
    has not already succeeded (a redelivered or resent step repeats only as a no-op)."""
    return job.state not in FINISHED_JOB_STATES and step.state != "succeeded"


def money_may_have_moved(job: Job) -> bool:
    """Whether a step of the job that moves money has started (cancel_job refuses then)."""
    return any(s.moves_money and s.state != "pending" for s in job.steps)


def mark_running(job: Job, step: JobStep, *, started_at: datetime) -> None:
    """Record that the step has started (of the locked job)."""
    if job.state == "queued":
        job.state, job.started_at = "running", started_at
    step.state = "running"
    step.attempts += 1
    step.started_at = step.started_at or started_at
    step.error = step.error_code = step.error_detail = None
    job.updated_at = utcnow()


def complete_step(
    job: Job, step: JobStep, *, started_at: datetime, result: dict[str, Any] | None
) -> None:
    """Record the step's start (`started_at`) and success at once, in the transaction of the
    step's own work (the job is locked: `lock_step`); the last step finishes the job."""
    if job.state == "queued":
        job.state, job.started_at = "running", started_at
    if step.state != "running":  # a step marked running before its provider call counted then
        step.attempts += 1
    step.started_at = step.started_at or started_at
    _succeed(job, step, result, utcnow())


def append_step(job: Job, spec: StepSpec) -> JobStep:
    """Add a step at the end of the locked job (a step found to be needed while the job runs,
    e.g. a refund); the same step still pending is not added twice."""
    for step in job.steps:
        same = step.task_name == spec.task_name and step.kwargs == spec.kwargs
        if same and step.state == "pending":
            return step
    step = JobStep(
        position=len(job.steps),
        name=spec.name,
        task_name=spec.task_name,
        kwargs=spec.kwargs,
        task_id=str(uuid.uuid4()),
        moves_money=spec.moves_money,
    )
    job.steps.append(step)
    return step


def pending_after(job: Job, step: JobStep) -> list[JobStep]:
    """The job's steps after `step` still to run, in order (unless the job is finished)."""
    if job.state in FINISHED_JOB_STATES:
        return []
    return [s for s in job.steps if s.position > step.position and s.state == "pending"]


def adopt(job: Job, owner_id: uuid.UUID) -> None:
    """Give the (locked) job an owner if it has none yet."""
    if job.owner_id is None:
        job.owner_id = owner_id


def _succeed(job: Job, step: JobStep, result: dict[str, Any] | None, now: datetime) -> None:
    step.state, step.finished_at = "succeeded", now
    step.error = step.error_code = step.error_detail = None
    if result:
        job.result = {**(job.result or {}), **result}
    if all(s.state in ("succeeded", "skipped") for s in job.steps):
        job.state, job.finished_at = "succeeded", now
    job.updated_at = now


def fail_step(
    session: Session,
    *,
    task_id: str,
    failure: Failure,
    retrying: bool = False,
    count_attempt: bool = False,
) -> Job | None:
    """Record a step's failure; unless it is retried, the job fails and later steps are skipped.

    `count_attempt`: the failed run was not counted when it started (a one-commit step)."""
    step = _step_by_task(session, task_id)
    if step is None:
        return None
    job = get_job(session, step.job_id, lock=True)
    if job.state in FINISHED_JOB_STATES:
        return job
    now = utcnow()
    step = next(s for s in job.steps if s.task_id == task_id)
    noted = failure.retrying if retrying else failure
    if count_attempt:
        step.attempts += 1
    step.error, step.error_code, step.error_detail = noted.message, noted.code, noted.detail
    if not retrying:
        step.state, step.finished_at = "failed", now
        for later in job.steps:
            if later.state == "pending":
                later.state = "skipped"
        job.state, job.finished_at = "failed", now
        job.error, job.error_code, job.error_detail = noted.message, noted.code, noted.detail
    job.updated_at = now
    return job


def cancel_job(session: Session, job: Job) -> list[str]:
    """Cancel a queued or running job; returns the task ids to revoke.

    Refused (NotCancellableError) once the job is finished or a step that moves money
    has started: money is never left half-moved.
    """
    if job.state in FINISHED_JOB_STATES:
        raise NotCancellableError(f"the task is already {job.state}")
    if money_may_have_moved(job):
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


def job_before_step(session: Session, *, kind: str, subject: str, step: str) -> Job | None:
    """An active job of `kind` about `subject` whose step `step` has not finished yet (it
    will see whatever is committed now), if there is one."""
    stmt = (
        select(Job)
        .join(JobStep, JobStep.job_id == Job.id)
        .where(
            Job.kind == kind,
            Job.subject == subject,
            Job.state.in_(ACTIVE_STATES),
            JobStep.name == step,
            JobStep.state.in_(("pending", "running")),
        )
        .limit(1)
    )
    return session.execute(stmt).scalars().first()


def touch_job(session: Session, job_id: uuid.UUID) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow()))
