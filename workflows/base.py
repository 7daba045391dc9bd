"""Starting and cancelling a workflow: the job row is committed first, then the chain is sent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session

from market.db import after_commit
from market.job_plans import PlannedJob
from market.jobs import StepSpec, cancel_job, create_job, touch_job
from market.models import Job
from workers.dispatch import revoke, send_job, send_planned


def start(
    session: Session,
    *,
    kind: str,
    owner_id: uuid.UUID | None,
    steps: Sequence[StepSpec],
    subject: str | None = None,
) -> Job:
    """Record the job and send its steps once the caller's transaction commits."""
    job = create_job(session, kind=kind, owner_id=owner_id, steps=steps, subject=subject)
    after_commit(session, lambda: send_job(job))
    return job


def send(job: PlannedJob) -> None:
    """Send a planned job's chain; the caller has committed its rows (one broker publish)."""
    send_planned(job)


def resume(session: Session, job: Job) -> None:
    """Send the job's unfinished steps again once the caller commits (their message was
    lost). Safe: every step is idempotent, and a finished job's steps do nothing."""
    touch_job(session, job.id)
    after_commit(session, lambda: send_job(job))


def cancel(session: Session, job: Job) -> None:
    """Cancel the job (NotCancellableError if too late) and revoke its steps after commit.

    A running step is not killed: it finishes, its result is ignored, and the steps after
    it see the cancelled job and do nothing.
    """
    task_ids = cancel_job(session, job)
    if task_ids:
        after_commit(session, lambda: revoke(task_ids))
