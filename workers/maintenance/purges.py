"""Records past their retention (jobs and their Celery results, read notifications,
processed payment events, deliveries, idempotency keys, expired purchases), in batches; then
the row counts /metrics reads are folded (market/ops/gauges.py `fold_counts`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from market.models.base import utcnow
from market.ops import gauges, purges
from workers import runtime
from workers.app import app
from workers.base import StepTask
from workers.maintenance.locks import singleton

log = logging.getLogger(__name__)


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


def _purge_all(one_batch: Callable[[Session], purges.Batch], max_batches: int) -> int:
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


def retention_purges(now: Any = None) -> dict[str, Callable[[Session], purges.Batch]]:
    """Every purge, as one-batch functions with their retention cut-offs applied."""
    s = runtime.settings()
    now = now or utcnow()
    n = s.purge_batch_size
    return {
        "jobs": lambda session: purges.finished_jobs(
            session, before=now - timedelta(days=s.job_retention_days), limit=n
        ),
        "notifications": lambda session: purges.read_notifications(
            session, before=now - timedelta(days=s.notification_retention_days), limit=n
        ),
        "payment_events": lambda session: purges.processed_payment_events(
            session, before=now - timedelta(days=s.payment_event_retention_days), limit=n
        ),
        "deliveries": lambda session: purges.finished_deliveries(
            session, before=now - timedelta(days=s.delivery_retention_days), limit=n
        ),
        "idempotency_keys": lambda session: purges.idempotency_keys(
            session, before=now - timedelta(hours=s.idempotency_key_ttl_hours), limit=n
        ),
        # Expiry itself is a state change (expire_purchases); this removes the rows later.
        "expired_purchases": lambda session: purges.expired_purchases(
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
        removed = {
            name: _purge_all(batch, max_batches) for name, batch in retention_purges().items()
        }
        # The purges moved the row counts of /metrics in their own slots: fold them.
        with runtime.transaction() as session:
            folded = gauges.fold_counts(session)
    log.info("purged %s in %.1fs", removed, time.monotonic() - started)
    return {"purged": removed, "count_slots_folded": folded}
