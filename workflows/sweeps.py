"""The payment sweeps of the `maintenance` queue: workflow-side tasks, because each one
starts settlement workflows (workers may not import workflows). Included by the Celery app
by name (workers/app.py TASK_MODULES); beat names them by string.

None settles inline: every payment a sweep finds goes through the one settlement corridor
(workflows/settlement.py) as a job with its steps, owned by the purchase's buyer, visible in
/tasks. A payment whose latest answer is already applied, or whose settlement is queued or
running, starts nothing: a sweep run twice starts each settlement once.

- reconcile_purchases: every payment changed at MercadoPago since the stored cursor (one
  paged search, whatever the number of purchases: lost webhooks of approvals, refunds and
  chargebacks all reach the ledger within one run), then the pending purchases one by one
  (those created before the cursor existed), then refunds left requested.
- requeue_payment_events: events not processed in time start their work again.
- expire_purchases: pending purchases past their expiry expire, unless MercadoPago holds a
  live payment for them (settled instead).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from market import jobs
from market.errors import ProviderError
from market.models.base import utcnow
from market.payments import purchases, reconciliation, refunds, settlement
from market.payments.mercadopago import events
from workers import runtime
from workers.app import app
from workers.base import StepTask
from workers.maintenance.locks import singleton
from workers.payments import gateway
from workflows.base import resume
from workflows.payment_events import start_for_event
from workflows.settlement import settle_once

log = logging.getLogger(__name__)


def _settle(session: Session, payment: dict[str, Any]) -> bool:
    """Record a payment a search returned and start its settlement if it needs one."""
    payment_id = settlement.record_payment(session, payment)
    if settlement.is_settled(session, payment_id):
        return False
    purchase = settlement.purchase_of_payment(session, payment_id)
    job = settle_once(
        session,
        payment_id=payment_id,
        owner_id=purchase.user_id if purchase else None,
        fetched=True,
    )
    return job is not None


def _settle_all(found: list[dict[str, Any]]) -> int:
    started = 0
    with runtime.transaction() as session:
        for payment in found:
            if payment.get("id") is not None and payment.get("external_reference"):
                started += _settle(session, payment)
    return started


@app.task(base=StepTask, name="maintenance.reconcile_purchases")
def reconcile_purchases(*, older_than_s: int = 120, limit: int = 100) -> dict[str, Any]:
    """Start a settlement of every payment MercadoPago changed since the last run, and of the
    payments of pending purchases quiet for `older_than_s` (0: all now); send refunds left
    requested again. Idempotent: a payment already settled or settling starts nothing."""
    with singleton("reconcile_purchases", ttl_s=10 * 60) as acquired:
        if not acquired:
            return {"skipped": "another reconciliation is running"}
        counts = {"changed": 0, "purchases": 0, "payments": 0, "settled": 0, "errors": 0}
        try:
            counts["changed"], counts["settled"] = _changed_since_cursor()
        except ProviderError as exc:
            counts["errors"] += 1
            log.warning("reconcile: search of changed payments failed: %s", exc)
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with runtime.transaction() as session:
            due = [
                (p.id, p.external_reference)
                for p in purchases.pending_to_reconcile(session, older_than=cutoff, limit=limit)
            ]
        counts["purchases"] = len(due)
        mp = gateway()
        for purchase_id, reference in due:
            try:
                found = mp.search_payments(external_reference=reference)
            except ProviderError as exc:
                counts["errors"] += 1
                log.warning("reconcile: search for %s failed: %s", reference, exc)
                continue
            counts["payments"] += len(found)
            counts["settled"] += _settle_all(found)
            with runtime.transaction() as session:
                purchases.touch_purchase(session, purchase_id)
        counts["refunds"] = _stale_refunds(cutoff, limit)
    return counts


def _changed_since_cursor() -> tuple[int, int]:
    """Read every page of the payments changed since the cursor and move it past them;
    how many changed, and how many settlements that started."""
    with runtime.transaction() as session:
        window = reconciliation.window(session, now=utcnow())
    mp = gateway()
    changed = settled = 0
    offset = 0
    while True:
        page, total = mp.search_updated_payments(
            begin=window.begin, end=window.end, offset=offset, limit=window.page
        )
        changed += len(page)
        settled += _settle_all(page)
        offset += len(page)
        if not page or offset >= total:
            break
    with runtime.transaction() as session:
        reconciliation.advance(session, to=window.end)
    return changed, settled


def _stale_refunds(cutoff: Any, limit: int) -> int:
    """Refunds still requested (their job failed or was lost) go through settlement again."""
    started = 0
    with runtime.transaction() as session:
        for refund in refunds.stale_refunds(session, older_than=cutoff, limit=limit):
            purchase = purchases.get_purchase(session, refund.purchase_id)
            started += (
                settle_once(
                    session, payment_id=refund.payment_id, owner_id=purchase.user_id, fetched=True
                )
                is not None
            )
    return started


@app.task(base=StepTask, name="maintenance.requeue_payment_events")
def requeue_payment_events(
    *, older_than_s: int = 300, max_attempts: int = 10, limit: int = 100
) -> dict[str, int]:
    """Finish the work of MercadoPago payment events not processed in time: the event's job,
    running but quiet since the cut-off, is sent again (the message of its next step was
    lost; a job still queued is `maintenance.resend_stale_jobs`'s); a job that ended without
    processing it (failed for good, or purged) is replaced by a new one. A job still moving
    is left alone. Two sweeps at once split the rows."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    resent = started = 0
    with runtime.transaction() as session:
        claimed = events.claim_stale(
            session, older_than=cutoff, max_attempts=max_attempts, limit=limit
        )
        for event in claimed:
            job = jobs.get_job(session, event.job_id) if event.job_id else None
            if job is not None and job.state in jobs.ACTIVE_STATES:
                # A step holding the job's lock is committing right now (steps lock their
                # job before their own rows, e.g. this event's: waiting here for it, while
                # holding the event, could deadlock): it is moving, leave it.
                quiet = job.state == "running" and job.updated_at < cutoff
                if quiet and jobs.lock_job_unless_busy(session, job.id) is not None:
                    resume(session, job)
                    resent += 1
                continue
            job = start_for_event(
                session, event_id=event.id, kind=event.kind, data_id=event.data_id
            )
            events.attach_job(session, event_id=event.id, job_id=job.id)
            started += 1
    return {"requeued": len(claimed), "resent": resent, "started": started}


@app.task(base=StepTask, name="maintenance.expire_purchases")
def expire_purchases(*, limit: int = 100) -> dict[str, int]:
    """Expire pending purchases past their expiry that MercadoPago holds no live payment for;
    start a settlement of each payment it does hold. Idempotent."""
    with runtime.transaction() as session:
        due = [
            (p.id, p.external_reference)
            for p in purchases.due_for_expiry(session, now=utcnow(), limit=limit)
        ]
    expired = settled = errors = 0
    mp = gateway()
    for purchase_id, reference in due:
        try:
            found = mp.search_payments(external_reference=reference)
        except ProviderError as exc:
            # Unknown: leave it pending rather than expire a purchase that may be paid.
            errors += 1
            log.warning("expire: search for %s failed: %s", reference, exc)
            continue
        settled += _settle_all(found)
        with runtime.transaction() as session:
            expired += purchases.expire_purchase(session, purchase_id=purchase_id, payments=found)
    return {"due": len(due), "expired": expired, "payments_settled": settled, "errors": errors}
