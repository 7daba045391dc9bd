"""The task base class: retries of transient errors, the job step record, the log context."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.exc import OperationalError

from market import jobs
from market import logging as log_context
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
            try:
                with runtime.transaction() as session:
                    step = jobs.start_step(session, task_id=task_id)
            except OperationalError as exc:
                # Autoretry only sees errors of `run`: without this a database that drops
                # before the body (which has not run) ends the chain, its job stuck for ever.
                raise self.retry(exc=exc, countdown=self.backoff_s()) from exc
            if step is not None and not step.proceed:
                log.info("skipping %s: job %s is finished or cancelled", self.name, step.job_id)
                return None
        # The job id joins the log context here, where finding the step has just read it
        # (a lookup of its own in the task_prerun handler cost a transaction per task).
        with log_context.context(job_id=step.job_id if step is not None else None):
            return self._run_step(task_id or "", step, *args, **kwargs)

    def _run_step(self, task_id: str, step: jobs.StepRun | None, *args: Any, **kwargs: Any) -> Any:
        """Run the body and record the step's outcome (`step` None: no job step to record)."""
        try:
            result = super().__call__(*args, **kwargs)
        except Retry as exc:
            if step is not None:
                try:
                    with runtime.transaction() as session:
                        jobs.fail_step(
                            session, task_id=task_id, error=f"retrying: {exc}", retrying=True
                        )
                except OperationalError as db_exc:
                    # Often the database is what failed: the retry matters, not its note.
                    log.warning("retrying %s without recording it: %s", self.name, db_exc)
            raise
        except (Exception, SoftTimeLimitExceeded) as exc:
            if step is not None:
                with runtime.transaction() as session:
                    jobs.fail_step(session, task_id=task_id, error=_reason(exc))
            raise
        if step is not None:
            try:
                with runtime.transaction() as session:
                    jobs.finish_step(
                        session,
                        task_id=task_id,
                        result=result if isinstance(result, dict) else None,
                    )
            except OperationalError as exc:
                # The body's work is committed; the rerun finds it done and records the step.
                raise self.retry(exc=exc, countdown=self.backoff_s()) from exc
        return result

    def backoff_s(self) -> int:
        """The delay autoretry would wait before this retry (exponential, jittered, bounded)."""
        return get_exponential_backoff_interval(
            factor=self.retry_backoff,
            retries=self.request.retries,
            maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter,
        )


def _reason(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"
