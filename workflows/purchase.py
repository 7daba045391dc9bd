"""The purchase workflow: create_preference (payments queue); the job result is the checkout."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "credits.purchase"


def start_purchase(session: Session, *, owner_id: uuid.UUID, purchase_id: uuid.UUID) -> Job:
    """Record the job; its step is sent once the caller commits the pending purchase."""
    return start(
        session,
        kind=KIND,
        owner_id=owner_id,
        subject=f"purchase:{purchase_id}",
        steps=[StepSpec("payments.create_preference", {"purchase_id": str(purchase_id)})],
    )
