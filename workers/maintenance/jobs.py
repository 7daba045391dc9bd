"""Jobs whose first message was lost: sent again."""

from __future__ import annotations

import logging
from datetime import timedelta

from market import jobs
from market.models.base import utcnow
from workers import runtime
from workers.app import app
from workers.base import StepTask
from workers.dispatch import send_job

log = logging.getLogger(__name__)


@app.task(base=StepTask, name="maintenance.resend_stale_jobs")
def resend_stale_jobs(*, older_than_s: int = 600, limit: int = 100) -> int:
    """Send again the jobs still queued long after they were created (their message was lost).

    Safe to repeat: a step of a job that is already running or finished does nothing.
    """
    with runtime.transaction() as session:
        stale = jobs.stale_queued_jobs(
            session, older_than=utcnow() - timedelta(seconds=older_than_s), limit=limit
        )
        for job in stale:
            jobs.touch_job(session, job.id)
            send_job(job)
    if stale:
        log.warning("re-sent %d stale jobs", len(stale))
    return len(stale)
