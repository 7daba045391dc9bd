"""Tasks of the `maintenance` queue: the periodic jobs of beat_schedule.py."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import redis
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from market import (
    alerts,
    analytics,
    avatars,
    health,
    jobs,
    ledger,
    metrics,
    purchases,
    purge,
    refunds,
)
from market.errors import ProviderError
from market.models import Job, MercadoPagoNotification
from market.models.base import utcnow
from workers import payments, runtime
from workers.app import QUEUES, app, queue_name
from workers.base import StepTask
from workers.dispatch import send_job
from workers.notifications import dispatch_pending

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


# Operations (issue 6): heartbeat, alerts, roll-up and purges ---------------------------------
#
# Exactly one `celery beat` runs (one Procfile entry; `replicas: 1` in docker-compose). Should
# a second one ever run, each periodic task below also holds a Redis lock named after it while
# it runs, so runs never overlap, and every one of them is idempotent anyway.

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


@contextmanager
def singleton(name: str, ttl_s: int) -> Iterator[bool]:
    """Hold the Redis lock `name` while the block runs; yields False when another run holds it."""
    client = runtime.redis_client()
    key = f"{runtime.settings().key_prefix}:lock:{name}"
    token = uuid.uuid4().hex
    acquired = bool(client.set(key, token, nx=True, ex=ttl_s))
    try:
        yield acquired
    finally:
        if acquired:
            # Compare-and-delete: a run that outlived its TTL must not free a successor's lock.
            client.eval(_RELEASE, 1, key, token)


@app.task(base=StepTask, name="maintenance.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> None:
    """Record that beat is alive (health is degraded when this stops; idempotent)."""
    health.write_beat_heartbeat(runtime.redis_client(), runtime.settings().key_prefix)


def _reading(name: str, read: Callable[[], float | None]) -> float | None:
    try:
        return read()
    except Exception as exc:  # unknown now: the rule keeps its state
        log.warning("alert reading %s unavailable: %s", name, exc)
        return None


def alert_readings() -> dict[str, float | None]:
    """Measure what the alert rules look at (None where a measurement is unavailable)."""
    s = runtime.settings()
    queues = {q: queue_name(q) for q in QUEUES}
    keyprefix = s.celery_queue_prefix

    def requests_summary() -> dict[str, Any]:
        recorder = metrics.RequestMetrics(runtime.redis_client(), s.key_prefix)
        return metrics.summary(recorder.endpoints(5))

    summary = _reading_dict("requests", requests_summary)

    def failed_jobs() -> float:
        with runtime.transaction() as session:
            return float(_failed_jobs_last_hour(session))

    def workers() -> float:
        return float(len(app.control.inspect(timeout=1.0).ping() or {}))

    # Too few requests make a rate meaningless: below 20 in 5 minutes it reads as 0.
    enough = summary is not None and summary["requests"] >= 20
    return {
        "error_rate": (summary["error_rate"] if enough else 0.0) if summary else None,
        "p95_ms": (summary["latency_ms"]["p95"] or 0.0) if summary else None,
        "queue_depth": _reading(
            "queue_depth",
            lambda: float(
                max(
                    health.queue_depths(
                        s.celery_broker_url, queues, global_keyprefix=keyprefix
                    ).values()
                )
            ),
        ),
        "oldest_message_s": _reading(
            "oldest_message_s",
            # No ages at all (a broker that cannot be peeked) is unavailable, not 0.
            lambda: max(
                [
                    a or 0.0
                    for a in health.oldest_message_age(
                        s.celery_broker_url, queues, global_keyprefix=keyprefix
                    ).values()
                ],
                default=None,
            ),
        ),
        "failed_jobs": _reading("failed_jobs", failed_jobs),
        "workers_min": _reading("workers_min", workers),
        "disk_free_pct": _reading("disk_free_pct", lambda: metrics.disk_free_pct(s.media_root)),
    }


def _reading_dict(name: str, read: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return read()
    except redis.RedisError as exc:
        log.warning("alert reading %s unavailable: %s", name, exc)
        return None


def _failed_jobs_last_hour(session: Session) -> int:
    since = utcnow() - timedelta(hours=1)
    return session.execute(
        select(func.count()).select_from(Job).where(Job.state == "failed", Job.finished_at >= since)
    ).scalar_one()


@app.task(base=StepTask, name="maintenance.evaluate_alerts")
def evaluate_alerts() -> dict[str, Any]:
    """Evaluate the alert rules; notify admins of each new breach and recovery (once each)."""
    with singleton("evaluate_alerts", ttl_s=120) as acquired:
        if not acquired:
            return {"skipped": "another evaluation is running"}
        readings = alert_readings()
        with runtime.transaction() as session:
            changes = alerts.evaluate(
                session, readings=readings, limits=alerts.thresholds(runtime.settings())
            )
    if changes:
        from workers.notifications import dispatch_pending

        dispatch_pending.delay()
    return {
        "readings": readings,
        "triggered": [c.rule for c in changes if c.kind == "alert.triggered"],
        "resolved": [c.rule for c in changes if c.kind == "alert.resolved"],
    }


def _forget_results(task_ids: list[str]) -> None:
    """Drop the Celery results of purged steps (Redis results also expire on their own)."""
    backend = app.backend
    if hasattr(backend, "client") and hasattr(backend, "get_key_for_task"):
        for start in range(0, len(task_ids), 500):
            keys = [backend.get_key_for_task(t) for t in task_ids[start : start + 500]]
            backend.client.delete(*keys)
    else:
        for task_id in task_ids:
            backend.forget(task_id)


def _purge_all(one_batch: Callable[[Session], purge.Batch], max_batches: int) -> int:
    total = 0
    for _ in range(max_batches):
        with runtime.transaction() as session:
            batch = one_batch(session)
        if batch.task_ids:
            _forget_results(batch.task_ids)
        total += batch.deleted
        if batch.deleted == 0:
            break
    return total


def purges(now: Any = None) -> dict[str, Callable[[Session], purge.Batch]]:
    """Every purge, as one-batch functions with their retention cut-offs applied."""
    s = runtime.settings()
    now = now or utcnow()
    n = s.purge_batch_size
    return {
        "jobs": lambda session: purge.finished_jobs(
            session, before=now - timedelta(days=s.job_retention_days), limit=n
        ),
        "notifications": lambda session: purge.read_notifications(
            session, before=now - timedelta(days=s.notification_retention_days), limit=n
        ),
        "inbox": lambda session: purge.processed_inbox(
            session, before=now - timedelta(days=s.inbox_retention_days), limit=n
        ),
        "deliveries": lambda session: purge.finished_deliveries(
            session, before=now - timedelta(days=s.delivery_retention_days), limit=n
        ),
        "idempotency_keys": lambda session: purge.idempotency_keys(
            session, before=now - timedelta(hours=s.idempotency_key_ttl_hours), limit=n
        ),
        # Expiry itself is a state change (expire_purchases); this removes the rows later.
        "expired_purchases": lambda session: purge.expired_purchases(
            session, before=now - timedelta(days=s.expired_purchase_retention_days), limit=n
        ),
    }


@app.task(base=StepTask, name="maintenance.purge_records")
def purge_records(*, max_batches: int = 100) -> dict[str, Any]:
    """Delete records past retention, in bounded batches (safe to rerun)."""
    with singleton("purge_records", ttl_s=30 * 60) as acquired:
        if not acquired:
            return {"skipped": "another purge is running"}
        started = time.monotonic()
        removed = {name: _purge_all(batch, max_batches) for name, batch in purges().items()}
    log.info("purged %s in %.1fs", removed, time.monotonic() - started)
    return {"purged": removed}


@app.task(base=StepTask, name="maintenance.rollup_analytics")
def rollup_analytics(*, day: str | None = None) -> dict[str, Any]:
    """Recompute the daily analytics of `day` (ISO date), or of yesterday and today (rerunnable)."""
    today = utcnow().date()
    days = [date.fromisoformat(day)] if day else [today - timedelta(days=1), today]
    with singleton("rollup_analytics", ttl_s=30 * 60) as acquired:
        if not acquired:
            return {"skipped": "another roll-up is running"}
        done = []
        for one in days:
            with runtime.transaction() as session:
                done.append(analytics.rollup_day(session, one))
    return {"days": done}


# Credits (issue 3): reconciliation with MercadoPago, inbox re-processing, expiry, parity ------


@app.task(base=StepTask, name="maintenance.reconcile_purchases")
def reconcile_purchases(*, older_than_s: int = 120, limit: int = 100) -> dict[str, Any]:
    """Settle pending purchases from MercadoPago's payment search (a lost webhook or message
    still settles) and retry refunds left requested. Idempotent: apply_payment is."""
    with singleton("reconcile_purchases", ttl_s=10 * 60) as acquired:
        if not acquired:
            return {"skipped": "another reconciliation is running"}
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with runtime.transaction() as session:
            due = [
                (p.id, p.external_reference)
                for p in purchases.pending_to_reconcile(session, older_than=cutoff, limit=limit)
            ]
        counts = {"purchases": len(due), "payments": 0, "settled": 0, "refunds": 0, "errors": 0}
        gateway = payments.gateway()
        for purchase_id, reference in due:
            try:
                found = gateway.search_payments(external_reference=reference)
            except ProviderError as exc:
                counts["errors"] += 1
                log.warning("reconcile: search for %s failed: %s", reference, exc)
                continue
            for payment in found:
                counts["payments"] += 1
                outcome = payments.settle(payment)
                counts["settled"] += outcome.changed
            with runtime.transaction() as session:
                purchases.touch_purchase(session, purchase_id)
        with runtime.transaction() as session:
            stale = [r.id for r in refunds.stale_refunds(session, older_than=cutoff, limit=limit)]
        for refund_id in stale:
            try:
                payments.execute_refund(refund_id=refund_id)
                counts["refunds"] += 1
            except ProviderError as exc:
                counts["errors"] += 1
                log.warning("reconcile: refund %s failed: %s", refund_id, exc)
    if counts["settled"] or counts["refunds"]:
        dispatch_pending.delay()
    return counts


@app.task(base=StepTask, name="maintenance.requeue_notifications")
def requeue_notifications(
    *, older_than_s: int = 300, max_attempts: int = 10, limit: int = 100
) -> dict[str, int]:
    """Process again MercadoPago notifications whose settlement did not finish in time."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with runtime.transaction() as session:
        rows = session.execute(
            select(MercadoPagoNotification)
            .where(
                MercadoPagoNotification.processed_at.is_(None),
                MercadoPagoNotification.received_at < cutoff,
                MercadoPagoNotification.attempts < max_attempts,
                or_(
                    MercadoPagoNotification.requeued_at.is_(None),
                    MercadoPagoNotification.requeued_at < cutoff,
                ),
            )
            .order_by(MercadoPagoNotification.received_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
        due = []
        for row in rows:
            row.attempts += 1
            row.requeued_at = utcnow()
            due.append((row.id, int(row.data_id)))
    done = failed = 0
    for row_id, payment_id in due:
        try:
            payments.fetch(payment_id)
            outcome = payments.apply(payment_id, str(row_id))
            if outcome.refund_id is not None:
                payments.execute_refund(refund_id=outcome.refund_id)
            done += 1
        except ProviderError as exc:
            failed += 1
            log.warning("requeue: payment %s still unsettled: %s", payment_id, exc)
    if done:
        dispatch_pending.delay()
    return {"requeued": len(due), "processed": done, "failed": failed}


@app.task(base=StepTask, name="maintenance.expire_purchases")
def expire_purchases(*, limit: int = 100) -> dict[str, int]:
    """Expire pending purchases past their expiry that MercadoPago holds no live payment for
    (those are settled instead). Idempotent."""
    with runtime.transaction() as session:
        due = [
            (p.id, p.external_reference)
            for p in purchases.due_for_expiry(session, now=utcnow(), limit=limit)
        ]
    expired = settled = errors = 0
    gateway = payments.gateway()
    for purchase_id, reference in due:
        try:
            found = gateway.search_payments(external_reference=reference)
        except ProviderError as exc:
            # Unknown: leave it pending rather than expire a purchase that may be paid.
            errors += 1
            log.warning("expire: search for %s failed: %s", reference, exc)
            continue
        for payment in found:
            payments.settle(payment)
            settled += 1
        with runtime.transaction() as session:
            expired += purchases.expire_purchase(session, purchase_id=purchase_id, payments=found)
    if settled:
        dispatch_pending.delay()
    return {"due": len(due), "expired": expired, "payments_settled": settled, "errors": errors}


@app.task(base=StepTask, name="maintenance.check_ledger")
def check_ledger() -> dict[str, Any]:
    """Report wallets whose balance differs from their entries, and unbalanced transactions
    (logged as errors; read-only)."""
    with runtime.transaction() as session:
        return ledger.check_parity(session)


# Avatars (issue 4) ---------------------------------------------------------------------------


@app.task(base=StepTask, name="maintenance.purge_media")
def purge_media(*, max_batches: int = 20) -> dict[str, Any]:
    """Delete staged originals older than a day, uploads stuck that long, and avatar files no
    live upload owns, in bounded batches (safe to rerun)."""

    with singleton("purge_media", ttl_s=30 * 60) as acquired:
        if not acquired:
            return {"skipped": "another media purge is running"}
        s = runtime.settings()
        removed = avatars.purge_media(
            runtime.transaction,
            avatars.storage_for(s),
            avatars.policy_for(s),
            batch_size=s.purge_batch_size,
            max_batches=max_batches,
        )
    if any(removed.values()):
        log.info("purged media: %s", removed)
    return {"purged": removed}
