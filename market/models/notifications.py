"""In-app notifications: one row per event for the user it concerns (the inbox)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from market.models.base import Base, Timestamps, new_id

# The report's event types, plus operator alerts.
NOTIFICATION_KINDS = (
    "credits.purchase_approved",
    "payment.failed",
    "profile.updated",
    "avatar.updated",
    "privacy.updated",
    "refund.issued",
    "alert.triggered",
    "alert.resolved",
    "webhook_endpoint.disabled",
)


class Notification(Timestamps, Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # The business event this notification is about: a retried step cannot notify twice.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set once the dispatcher has fanned the event out to webhook endpoints.
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_notifications_user_created", "user_id", "created_at"),
        Index("ix_notifications_read", "read_at"),
        Index(
            "ix_notifications_undispatched",
            "created_at",
            postgresql_where="dispatched_at IS NULL",
        ),
    )
