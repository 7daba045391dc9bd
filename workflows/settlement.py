"""Settlement of a MercadoPago payment: fetch_payment → apply_payment → refund_payment → notify.

fetch_payment records what MercadoPago says of the payment (the truth, not the webhook);
apply_payment credits, fails or reverses the purchase once; refund_payment returns a
payment the purchase cannot take (usually nothing to do); notify fans out what was recorded.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "credits.settlement"


def start_settlement(
    session: Session,
    *,
    payment_id: int,
    owner_id: uuid.UUID | None,
    notification_id: uuid.UUID | None = None,
) -> Job:
    """Record the job; its steps are sent once the caller commits (e.g. the inbox row)."""
    kwargs = {"payment_id": str(payment_id)}
    if notification_id is not None:
        kwargs["notification_id"] = str(notification_id)
    return start(
        session,
        kind=KIND,
        owner_id=owner_id,
        subject=f"mercadopago-payment:{payment_id}",
        steps=[
            StepSpec("payments.fetch_payment", kwargs),
            StepSpec("payments.apply_payment", kwargs, moves_money=True),
            StepSpec("payments.refund_payment", {"payment_id": str(payment_id)}, moves_money=True),
            StepSpec("notifications.dispatch_pending", {}),
        ],
    )
