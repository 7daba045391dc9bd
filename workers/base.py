"""The task base class: retries of transient errors, the job step record, the log context.

Step bookkeeping comes in two forms. A task declared with `one_commit=True` records its step
in the transaction of its own work: its body does its writes inside `step_transaction()`,
which locks the job first, skips the work when the step may not run, and marks the step
succeeded (started at the task's start) before the one COMMIT. Any other task has its step
marked running in a transaction of its own before the body and finished in another after
(media, notifications, maintenance).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from market import jobs, notifications
from market import logging as log_context
from market.errors import ProviderTransientError, StorageUnavailableError
from market.models import Job, JobStep
from market.models.base import utcnow
from market.models.jobs import FINISHED_JOB_STATES
from workers import runtime

log = logging.getLogger(__name__)

# Errors worth another try: a provider that timed out or answered 5xx/429, a database
# connection that dropped. Anything else fails the job once, with its reason recorded.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ProviderTransientError,
    OperationalError,
    StorageUnavailableError,
)


class StepSkipped(Exception):
    """The step may not run: its job is finished or cancelled, or the step already succeeded.
    Raised on entering `step_transaction` (nothing is written); the task returns None."""


class QueuedStep(NamedTuple):
    """A step to append to the running chain (plain values: its row may be gone by then)."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str

    @classmethod
    def of(cls, step: JobStep) -> QueuedStep:
        return cls(step.task_name, dict(step.kwargs), step.task_id)


@dataclass
class _Run:
    """What a running one-commit task knows of its step."""

    task_id: str
    started_at: datetime
    done: bool = False  # its step transaction has committed (or there was no step to record)
    held: bool = False  # marked running before a provider call (this run's attempt counted)
    to_chain: list[QueuedStep] = field(default_factory=list)


_run: ContextVar[_Run | None] = ContextVar("step_run", default=None)


@dataclass
class StepWork:
    """The body's side of `step_transaction`: its session, the locked job (None when the task
    runs outside a job: called directly, eagerly, or sent alone), and what to record."""

    session: Session
    job: Job | None
    step: JobStep | None
    # Merged into the job's result when the step is marked succeeded.
    result: dict[str, Any] | None = None
    # False: commit the work but not the step's success (the body raises next, and the
    # failure is recorded as any other).
    record: bool = True
    added: list[jobs.StepSpec] = field(default_factory=list)

    def add_step(self, spec: jobs.StepSpec) -> None:
        """Add `spec` at the end of the job, in this transaction; it is appended to the running
        chain once this commits (outside a job it is not run)."""
        self.added.append(spec)


@contextmanager
def step_transaction() -> Iterator[StepWork]:
    """The one transaction of a one-commit step: the job locked, the body's work, the step
    recorded succeeded, one COMMIT. Raises StepSkipped (before the body's work) when the step
    may not run. Outside a one-commit task it is a plain transaction.

    After the commit: a notification recorded here is dispatched (`dispatch_pending`).
    """
    run = _run.get()
    with runtime.transaction() as session:
        found = jobs.lock_step(session, task_id=run.task_id) if run and not run.done else None
        if found is not None and not jobs.may_proceed(*found):
            job, step = found
            raise StepSkipped([QueuedStep.of(s) for s in jobs.pending_after(job, step)])
        job, step = found if found is not None else (None, None)
        work = StepWork(session, job, step)
        yield work
        if job is not None and step is not None and run is not None and work.record:
            added = [jobs.append_step(job, spec) for spec in work.added]
            jobs.complete_step(job, step, started_at=run.started_at, result=work.result)
            run.to_chain = [QueuedStep.of(s) for s in added]
        recorded = notifications.recorded_in(session)
    if run is not None and work.record:
        run.done = True
    if recorded:
        send_dispatch()


def skip_if_done() -> None:
    """Before a provider call of a one-commit step: raise StepSkipped when its job is finished
    or cancelled or the step already ran, so a resent or redelivered step does not call the
    provider for nothing. One read outside any transaction (no commit)."""
    run = _run.get()
    if run is None or run.done:
        return
    with runtime.autocommit_session() as session:
        states = jobs.step_states(session, task_id=run.task_id)
    if states is None:
        return
    job_state, step_state = states
    if job_state in FINISHED_JOB_STATES:
        raise StepSkipped([])
    if step_state == "succeeded":
        # It ran: step_transaction skips with the steps it added, to send them again.
        with step_transaction():
            pass


def hold_step(session: Session) -> None:
    """Before a one-commit step moves money at a provider (the call is outside any
    transaction): raise StepSkipped when the step may not run, and mark it running in the
    caller's transaction only when that is what keeps its job from being cancelled (no
    money-moving step of the job has started yet). A step after one that moved money (a
    settlement's refund) writes nothing here: its job cannot be cancelled any more."""
    run = _run.get()
    found = jobs.lock_step(session, task_id=run.task_id) if run and not run.done else None
    if found is None:
        return
    job, step = found
    if not jobs.may_proceed(job, step):
        raise StepSkipped([QueuedStep.of(s) for s in jobs.pending_after(job, step)])
    if step.moves_money and not jobs.money_may_have_moved(job):
        jobs.mark_running(job, step, started_at=run.started_at)
        run.held = True


def send_dispatch() -> None:
    """Send one `notifications.dispatch_pending` (after the commit that recorded them)."""
    from workers.notifications import dispatch_pending

    # Committed whatever happens here: should the broker be down, beat's dispatch sends them.
    try:
        dispatch_pending.delay()
    except BrokerError as exc:
        log.warning("notifications dispatch not sent (broker unreachable): %s", exc)


class StepTask(Task):
    """Base of every task. Sent with a pre-assigned id, a task finds its job step by that id.

    A step of a cancelled or finished job does nothing. The step is marked running before
    the body runs and succeeded or failed after; a dict returned by the body is merged into
    the job's result. Bodies must be idempotent: with `acks_late` a message is redelivered
    when a worker dies mid-task.

    With `one_commit = True` the body records its step itself (`step_transaction`), and a
    body that returns without one gets a step transaction of its own: one commit either way.
    Failures and retries are recorded in a transaction of their own, as for every task.
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
    one_commit = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        step = None
        if task_id and not self.request.is_eager and self.one_commit:
            return self._run_one_commit(task_id, *args, **kwargs)
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
                            session,
                            task_id=task_id,
                            failure=_failure_of(exc.exc if exc.exc is not None else exc),
                            retrying=True,
                        )
                except OperationalError as db_exc:
                    # Often the database is what failed: the retry matters, not its note.
                    log.warning("retrying %s without recording it: %s", self.name, db_exc)
            raise
        except (Exception, SoftTimeLimitExceeded) as exc:
            if step is not None:
                failure = _failure_of(exc)
                # The details stay here and in the admins' view of the job; its owner sees
                # the code and the safe message.
                log.warning(
                    "step %s of job %s failed (%s): %s",
                    self.name,
                    step.job_id,
                    failure.code,
                    failure.detail,
                    exc_info=failure.code == "internal-error",
                )
                with runtime.transaction() as session:
                    jobs.fail_step(session, task_id=task_id, failure=failure)
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

    def _run_one_commit(self, task_id: str, *args: Any, **kwargs: Any) -> Any:
        """Run a body that records its own step (`step_transaction`): one commit per step."""
        run = _Run(task_id, utcnow())
        token = _run.set(run)
        try:
            result = super().__call__(*args, **kwargs)
            if not run.done:
                # The body wrote nothing (e.g. nothing left to do): record the step alone.
                try:
                    with step_transaction() as work:
                        work.result = result if isinstance(result, dict) else None
                except OperationalError as exc:
                    # Autoretry sees only the body's errors; this one rolled back whole.
                    raise self.retry(exc=exc, countdown=self.backoff_s()) from exc
        except StepSkipped as skipped:
            # A redelivered step that already succeeded still sends the steps it added (its
            # worker may have died between its commit and sending them).
            log.info("skipping %s: its job is finished or cancelled, or it ran", self.name)
            self._add_to_chain(skipped.args[0] if skipped.args else [])
            return None
        except Retry as exc:
            if not run.done:
                failed = exc.exc if exc.exc is not None else exc
                self._record_failure(task_id, failed, retrying=True, counted=run.held)
            raise
        except (Exception, SoftTimeLimitExceeded) as exc:
            if run.done:
                # After its step committed, nothing may fail the job: the step is done.
                log.exception("%s failed after its step was recorded", self.name)
                raise
            self._record_failure(task_id, exc, retrying=False, counted=run.held)
            raise
        finally:
            _run.reset(token)
        self._add_to_chain(run.to_chain)
        return result

    def _record_failure(
        self, task_id: str, exc: BaseException, *, retrying: bool, counted: bool
    ) -> None:
        failure = _failure_of(exc)
        if not retrying:
            log.warning(
                "step %s (task %s) failed (%s): %s",
                self.name,
                task_id,
                failure.code,
                failure.detail,
                exc_info=failure.code == "internal-error",
            )
        try:
            with runtime.transaction() as session:
                jobs.fail_step(
                    session,
                    task_id=task_id,
                    failure=failure,
                    retrying=retrying,
                    count_attempt=not counted,
                )
        except OperationalError as db_exc:
            if not retrying:
                raise
            # Often the database is what failed: the retry matters, not its note.
            log.warning("retrying %s without recording it: %s", self.name, db_exc)

    def _add_to_chain(self, steps: list[QueuedStep]) -> None:
        """Send `steps` after the rest of this task's chain (Celery sends the chain's next
        signature once this returns: `request.chain`, last item first)."""
        chain = self.request.chain
        if chain is None:
            chain = self.request.chain = []
        queued = {(sig.get("options") or {}).get("task_id") for sig in chain}
        for step in steps:
            if step.task_id not in queued:
                signature = self.app.signature(step.task_name, kwargs=step.kwargs, immutable=True)
                chain.insert(0, signature.set(task_id=step.task_id))

    def backoff_s(self) -> int:
        """The delay autoretry would wait before this retry (exponential, jittered, bounded)."""
        return get_exponential_backoff_interval(
            factor=self.retry_backoff,
            retries=self.request.retries,
            maximum=self.retry_backoff_max,
            full_jitter=self.retry_jitter,
        )


def _failure_of(exc: BaseException) -> jobs.Failure:
    if isinstance(exc, SoftTimeLimitExceeded):
        return jobs.Failure(
            "timed-out", "The step took too long and was stopped.", "SoftTimeLimitExceeded"
        )
    return jobs.failure_of(exc)
