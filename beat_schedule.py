"""The periodic jobs: one table. Every entry expires, so missed runs are dropped, not piled up.

Tasks are named by string; exactly one `celery beat` runs (see Procfile).
"""

from __future__ import annotations

from typing import Any

MINUTE = 60.0

SCHEDULE: dict[str, dict[str, Any]] = {
    "resend-stale-jobs": {
        "task": "maintenance.resend_stale_jobs",
        "schedule": 5 * MINUTE,
        "options": {"expires": 4 * MINUTE},
    },
    # Operations. Each of these also holds a Redis lock named after it while it runs
    # (workers/maintenance/locks.py `singleton`), so even a second beat cannot make runs overlap.
    "beat-heartbeat": {
        "task": "maintenance.beat_heartbeat",
        "schedule": 30.0,
        "options": {"expires": 25.0},
    },
    "evaluate-alerts": {
        "task": "maintenance.evaluate_alerts",
        "schedule": 1 * MINUTE,
        "options": {"expires": 50.0},
    },
    # Yesterday (final) and today (so far); rerunning a day rewrites it, never adds to it.
    "rollup-analytics": {
        "task": "maintenance.rollup_analytics",
        "schedule": 60 * MINUTE,
        "options": {"expires": 30 * MINUTE},
    },
    "purge-records": {
        "task": "maintenance.purge_records",
        "schedule": 60 * MINUTE,
        "options": {"expires": 30 * MINUTE},
    },
    # Payments (workflows/sweeps.py, each starting settlement jobs, never settling inline):
    # every payment MercadoPago changed since the last run and pending purchases are
    # reconciled, so a lost webhook, a panel refund or a chargeback still reaches the ledger;
    # MercadoPago payment events not processed in time start again; pending purchases past
    # their expiry expire; the ledger's parity is checked.
    "reconcile-purchases": {
        "task": "maintenance.reconcile_purchases",
        "schedule": 5 * MINUTE,
        "options": {"expires": 4 * MINUTE},
    },
    "requeue-payment-events": {
        "task": "maintenance.requeue_payment_events",
        "schedule": 2 * MINUTE,
        "options": {"expires": 90.0},
    },
    "expire-purchases": {
        "task": "maintenance.expire_purchases",
        "schedule": 10 * MINUTE,
        "options": {"expires": 8 * MINUTE},
    },
    "check-ledger": {
        "task": "maintenance.check_ledger",
        "schedule": 60 * MINUTE,
        "options": {"expires": 30 * MINUTE},
    },
    # The user's notifications: outgoing webhook retries (and sends whose message was lost)
    # come due by the second, so a short period; overlapping runs share the work (claims SKIP
    # LOCKED). The dispatch is a safety net for a lost `dispatch_pending` message (workflows
    # send one).
    "retry-webhook-deliveries": {
        "task": "notifications.retry_deliveries",
        "schedule": 10.0,
        "options": {"expires": 8.0},
    },
    "dispatch-notifications": {
        "task": "notifications.dispatch_pending",
        "schedule": 1 * MINUTE,
        "options": {"expires": 50.0},
    },
    # Avatars: staged originals older than a day, uploads stuck before activation, and
    # avatar files no live upload owns (bounded batches).
    "purge-media": {
        "task": "maintenance.purge_media",
        "schedule": 60 * MINUTE,
        "options": {"expires": 30 * MINUTE},
    },
}
