"""The manual redelivery of an outgoing webhook delivery: send_deliveries (notifications queue)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "webhook.redeliver"


def start_redelivery(session: Session, *, owner_id: uuid.UUID, delivery_id: uuid.UUID) -> Job:
    """Record the job; its step is sent once the caller commits the redelivery request."""
    return start(
        session,
        kind=KIND,
        owner_id=owner_id,
        subject=f"webhook_delivery:{delivery_id}",
        steps=[StepSpec("notifications.send_deliveries", {"delivery_ids": [str(delivery_id)]})],
    )
