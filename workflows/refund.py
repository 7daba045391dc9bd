"""The admin refund workflow: refund_payment at MercadoPago (which, once MercadoPago has
refunded, records the buyer's notification and sends its dispatch after its commit).

The credits were already taken back when the refund was asked for (market/payments/purchases.py
`request_refund`), so a refund that would overdraw is refused before MercadoPago is called.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "credits.refund"


def start_refund(
    session: Session, *, owner_id: uuid.UUID, refund_id: uuid.UUID, purchase_id: uuid.UUID
) -> Job:
    """Record the job; its steps are sent once the caller commits the refund request."""
    return start(
        session,
        kind=KIND,
        owner_id=owner_id,
        subject=f"purchase:{purchase_id}",
        steps=[
            StepSpec("payments.refund_payment", {"refund_id": str(refund_id)}, moves_money=True)
        ],
    )
