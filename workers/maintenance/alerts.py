"""Beat's heartbeat and the alert rules: measured, evaluated, admins notified."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.models import Job
from market.models.base import utcnow
from market.ops import alerts, health, metrics
from workers import runtime
from workers.app import QUEUES, app, queue_name
from workers.base import StepTask
from workers.maintenance.locks import singleton

log = logging.getLogger(__name__)


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
            # Thresholds an admin set at run time win over the environment's defaults.
            limits = alerts.effective_thresholds(session, runtime.settings())
            changes = alerts.evaluate(session, readings=readings, limits=limits)
    if changes:
        from workers.notifications import dispatch_pending

        dispatch_pending.delay()
    return {
        "readings": readings,
        "triggered": [c.rule for c in changes if c.kind == "alert.triggered"],
        "resolved": [c.rule for c in changes if c.kind == "alert.resolved"],
    }
