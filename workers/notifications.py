"""Tasks of the `notifications` queue: fan-out of recorded notifications, in batches."""

from __future__ import annotations

import logging

from market import notifications
from market.models.base import utcnow
from workers import runtime
from workers.app import app
from workers.base import StepTask

log = logging.getLogger(__name__)


@app.task(base=StepTask, name="notifications.dispatch_pending")
def dispatch_pending(*, batch_size: int = 500) -> dict[str, int]:
    """Fan out every notification not yet dispatched, a batch per transaction (idempotent)."""
    total = 0
    while True:
        with runtime.transaction() as session:
            batch = notifications.claim_undispatched(session, limit=batch_size)
            now = utcnow()
            for notification in batch:
                notification.dispatched_at = now
        total += len(batch)
        if len(batch) < batch_size:
            return {"notifications_dispatched": total}
