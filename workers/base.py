"""The task base class: retries of transient errors, the job step record, the log context."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from market import jobs
from market.errors import ProviderTransientError
from workers import runtime

log = logging.getLogger(__name__)

# Errors worth another try: a provider that timed out or answered 5xx/429, a database
# connection that dropped. Anything else fails the job once, with its reason recorded.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ProviderTransientError, OperationalError)


class StepTask(Task):
    """Base of every task. Sent with a pre-assigned id, a task finds its job step by that id.

    A step of a cancelled or finished job does nothing. The step is marked running before
    the body runs and succeeded or failed after; a dict returned by the body is merged into
    the job's result. Bodies must be idempotent: with `acks_late` a message is redelivered
    when a worker dies mid-task.
    """

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 6
    typing = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        step = None
        if task_id and not self.request.is_eager:
            with runtime.transaction() as session:
                step = jobs.start_step(session, task_id=task_id)
            if step is not None and not step.proceed:
                log.info("skipping %s: job %s is finished or cancelled", self.name, step.job_id)
                return None
        try:
            result = super().__call__(*args, **kwargs)
        except Retry as exc:
            if step is not None:
                with runtime.transaction() as session:
                    jobs.fail_step(
                        session, task_id=task_id, error=f"retrying: {exc}", retrying=True
                    )
            raise
        except (Exception, SoftTimeLimitExceeded) as exc:
            if step is not None:
                with runtime.transaction() as session:
                    jobs.fail_step(session, task_id=task_id, error=_reason(exc))
            raise
        if step is not None:
            with runtime.transaction() as session:
                jobs.finish_step(
                    session, task_id=task_id, result=result if isinstance(result, dict) else None
                )
        return result


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"
