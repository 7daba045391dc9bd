"""The avatar workflow: process_avatar → activate_avatar → notify, on the `media` queue."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from market.jobs import StepSpec
from market.models import Job
from workflows.base import start

KIND = "avatar.upload"


def start_avatar_upload(session: Session, *, owner_id: uuid.UUID, media_id: uuid.UUID) -> Job:
    """Record the job; its steps are sent once the caller commits the staged upload."""
    kwargs = {"media_id": str(media_id)}
    return start(
        session,
        kind=KIND,
        owner_id=owner_id,
        subject=f"media:{media_id}",
        steps=[
            StepSpec("media.process_avatar", kwargs),
            StepSpec("media.activate_avatar", kwargs),
            StepSpec("notifications.dispatch_pending", {}),
        ],
    )
